# Copyright (c) mmbcn contributors. All rights reserved.
"""Predict on images with a trained checkpoint through mmdet's or mmseg's
own inference API, and draw the predictions with their visualizers.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE|FOLDER ...]
        --out-dir DIR [--device cpu] [--score-thr 0.3] [--opacity 0.5]
        [--cfg-options k=v ...]

The config's ``default_scope`` picks the API: ``mmseg`` (``init_model``,
``inference_model``, ``SegLocalVisualizer``) or ``mmdet``
(``init_detector``, ``inference_detector``, ``DetLocalVisualizer``). A
folder stands for the images in it (.jpg, .jpeg, .png, .bmp, .tif, .tiff,
.webp). Each drawing is written to ``DIR/<image name>.png``; the drawings
never replace an input: an output path that is an image, the config or
the checkpoint, or two images of the same name, are refused before
anything is loaded. Each file is written whole or not at all.
"""
import argparse
import itertools
import os
import os.path as osp
import sys
from typing import Dict, List

from mmengine.config import DictAction

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
sys.path.insert(0, REPO)

from mmbcn.engine import CheckpointLoadError  # noqa: E402
from mmbcn.engine import load_model_weights  # noqa: E402
from mmbcn.engine.checkpoint.plain_state import decode  # noqa: E402
from mmbcn.utils import (OutputPathError, atomic_outputs,  # noqa: E402
                         check_outputs)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')
TASKS = ('mmdet', 'mmseg')
_names = itertools.count()


class InputError(ValueError):
    """An argument the tool cannot use (the message says why)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw a checkpoint\'s predictions on images with '
        'mmdet\'s / mmseg\'s inference API and visualizer')
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image files, or folders of images')
    parser.add_argument('--out-dir', required=True,
                        help='folder for the drawings (<image name>.png)')
    parser.add_argument('--device', default='cpu',
                        help='device for the model (default: cpu)')
    parser.add_argument(
        '--score-thr', type=float, default=0.3,
        help='detection: draw instances scored at least this (default 0.3)')
    parser.add_argument(
        '--opacity', type=float, default=0.5,
        help='opacity of the class colours (segmentation) and of the '
        'instance masks (detection) (default 0.5)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy (lists: key="[a,b]")')
    args = parser.parse_args(argv)
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], not {args.score_thr}')
    if not 0 <= args.opacity <= 1:
        parser.error(f'--opacity must be in [0, 1], not {args.opacity}')
    return args


def collect_images(paths: List[str]) -> List[str]:
    """The image files named by ``paths`` (folders expanded, sorted);
    raises FileNotFoundError / ValueError naming a path that is not
    there or holds no image."""
    images = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(
                osp.join(path, name) for name in os.listdir(path)
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and osp.isfile(osp.join(path, name)))
            if not found:
                raise InputError(
                    f'folder {path!r} holds no image '
                    f'({", ".join(IMAGE_EXTENSIONS)})')
            images += found
        elif osp.isfile(path):
            images.append(path)
        else:
            raise FileNotFoundError(f'image {path!r} not found')
    return images


def plan_outputs(images: List[str], out_dir: str, inputs: Dict[str, str]):
    """``{image: drawing path}``; raises OutputPathError if two images
    would share a drawing or a drawing would replace an input."""
    outputs = {}
    by_name = {}
    for image in images:
        name = osp.splitext(osp.basename(image))[0] + '.png'
        if name in by_name and not osp.samefile(by_name[name], image):
            raise OutputPathError(
                f'images {by_name[name]!r} and {image!r} would both be '
                f'drawn to {osp.join(out_dir, name)!r}: give them '
                'different names or run once for each')
        by_name[name] = image
        outputs[image] = osp.join(out_dir, name)
    roles = {f'image {i}': path for i, path in enumerate(images)}
    roles.update(inputs)
    check_outputs({f'drawing of {img!r}': out
                   for img, out in outputs.items()}, roles)
    return outputs


def task_of(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise InputError(
            f'config default_scope is {scope!r}: tools/infer.py runs mmdet '
            'and mmseg configs (default_scope \'mmdet\' or \'mmseg\')')
    return scope


def dataset_meta(model, cfg) -> dict:
    """The classes and palette the visualizer draws with: the checkpoint's
    (``meta.dataset_meta``), else the config's test dataset's."""
    meta = getattr(model, 'dataset_meta', None)
    if meta and meta.get('classes'):
        return meta
    from mmengine.registry import DATASETS, DefaultScope
    dataset = cfg.test_dataloader.dataset
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        cls = DATASETS.get(dataset.type)
    meta = dict(getattr(cls, 'METAINFO', {}))
    meta.update(dataset.get('metainfo') or {})
    return meta


class Predictor:
    """One model and one visualizer of the config's codebase."""

    def __init__(self, cfg, checkpoint: str, device: str, args):
        self.task = task_of(cfg)
        self.args = args
        name = f'mmbcn_infer_{os.getpid()}_{next(_names)}'
        if self.task == 'mmseg':
            from mmseg.apis import init_model
            from mmseg.visualization import SegLocalVisualizer
            self.model = init_model(cfg, None, device=device)
            self.visualizer = SegLocalVisualizer.get_instance(
                name, alpha=args.opacity)
        else:
            import warnings

            from mmdet.apis import init_detector
            from mmdet.visualization import DetLocalVisualizer
            with warnings.catch_warnings():  # 'checkpoint is None': below
                warnings.simplefilter('ignore')
                self.model = init_detector(cfg, None, device=device)
            self.model.dataset_meta = None
            self.visualizer = DetLocalVisualizer.get_instance(
                name, alpha=args.opacity)
        # every key, read with torch.load(weights_only=True)
        try:
            loaded = load_model_weights(self.model, checkpoint)
        except ValueError as e:  # another model's checkpoint
            raise InputError(f'checkpoint {checkpoint!r}: {e}') from e
        meta = decode(loaded.get('meta') or {})
        if meta.get('dataset_meta'):
            self.model.dataset_meta = meta['dataset_meta']
        self.visualizer.dataset_meta = dataset_meta(self.model,
                                                    self.model.cfg)

    def predict(self, image: str):
        """The model's data sample for one image file."""
        if self.task == 'mmseg':
            from mmseg.apis import inference_model
            return inference_model(self.model, image)
        from mmdet.apis import inference_detector
        return inference_detector(self.model, image)

    def draw(self, image: str, sample, out_file: str) -> None:
        """Draw ``sample`` on ``image`` into ``out_file`` (PNG)."""
        import mmcv
        img = mmcv.imread(image, channel_order='rgb')
        kwargs = dict(draw_gt=False, show=False, out_file=out_file)
        if self.task == 'mmdet':
            kwargs['pred_score_thr'] = self.args.score_thr
        self.visualizer.add_datasample(
            osp.basename(image), img, data_sample=sample, **kwargs)


def read_image_or_fail(path: str) -> None:
    """Raise InputError naming ``path`` if it is empty or no image."""
    import mmcv
    if osp.getsize(path) == 0:
        raise InputError(f'image {path!r} is empty (0 bytes)')
    try:
        img = mmcv.imread(path)
    except Exception as e:  # cv2 / PIL decoding errors
        raise InputError(f'image {path!r} cannot be decoded: {e}') from e
    if img is None:
        raise InputError(f'image {path!r} cannot be decoded as an image')


def main(argv=None) -> Dict[str, str]:
    """Run the tool; return ``{image: drawing path}``."""
    args = parse_args(argv)
    from mmengine.config import Config

    import mmbcn  # noqa: F401  (BCN, WSConv, weights-only checkpoints)
    for role, path in (('config', args.config),
                       ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{role} file {path!r} not found')
    images = collect_images(args.images)
    outputs = plan_outputs(
        images, args.out_dir,
        dict(config=args.config, checkpoint=args.checkpoint))
    for image in images:
        read_image_or_fail(image)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    task_of(cfg)
    predictor = Predictor(cfg, args.checkpoint, args.device, args)
    os.makedirs(args.out_dir, exist_ok=True)
    for image, out in outputs.items():
        sample = predictor.predict(image)
        with atomic_outputs(out) as (tmp, ):
            predictor.draw(image, sample, tmp)
        print(f'{image} -> {out}')
    return outputs


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, InputError, OutputPathError,
            CheckpointLoadError) as e:
        sys.exit(f'tools/infer.py: error: {e}')
