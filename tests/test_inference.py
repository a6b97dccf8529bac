"""Inference through OpenMMLab's own APIs on every shipped config, on a
bundled image: mmseg's ``init_model`` / ``inference_model`` /
``MMSegInferencer`` and mmdet's ``init_detector`` / ``inference_detector``
/ ``DetInferencer``, with checkpoints that ``tools/train.py`` writes for
the demo configs and with random weights for the full-size configs; and
``tools/infer.py``, which draws the predictions."""
import glob
import os
import os.path as osp
import sys
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import mmbcn  # noqa: F401
from mmbcn.datasets import generate_shapes_coco
from mmbcn.datasets.voc_demo import CLASSES, prepare_voc_shapes
from mmbcn.utils import OutputPathError
from tool_runner import REPO, load_tool, run

SEG = osp.join(REPO, 'configs', 'deeplabv3')
DET = [osp.join(REPO, 'configs', d) for d in ('faster_rcnn', 'mask_rcnn')]
SEG_DEMOS = sorted(glob.glob(osp.join(SEG, '*_demo.py')))
SEG_FULL = sorted(set(glob.glob(osp.join(SEG, '*.py'))) - set(SEG_DEMOS))
DET_ALL = sorted(p for d in DET for p in glob.glob(osp.join(d, '*.py')))
DET_DEMOS = [p for p in DET_ALL if p.endswith('_demo.py')]
DET_FULL = [p for p in DET_ALL if not p.endswith('_demo.py')]
SEG_DEMO = osp.join(SEG, 'deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-'
                    '128x128_demo.py')
DET_DEMO = osp.join(REPO, 'configs', 'mask_rcnn',
                    'mask-rcnn_r18_fpn_bcn-ws-all_demo.py')


@pytest.fixture(scope='module')
def voc_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'voc_shapes'
    prepare_voc_shapes(str(root))
    return root


@pytest.fixture(scope='module')
def image(voc_shapes):
    """A bundled validation image (JPEG, 160-240 px)."""
    return str(voc_shapes / 'JPEGImages' / 'shapes_val_0000.jpg')


def image_hw(path):
    with Image.open(path) as img:
        return img.height, img.width


def seg_apis(config, checkpoint, image):
    from mmseg.apis import inference_model, init_model
    model = init_model(config, checkpoint, device='cpu')
    result = inference_model(model, image)
    pred = result.pred_sem_seg.data
    assert tuple(pred.shape) == (1, ) + image_hw(image)
    num_classes = model.decode_head.num_classes
    assert int(pred.max()) < num_classes
    return model, result


def det_apis(config, checkpoint, image):
    from mmdet.apis import inference_detector, init_detector
    with warnings.catch_warnings():  # 'checkpoint is None': random weights
        warnings.simplefilter('ignore')
        model = init_detector(config, checkpoint, device='cpu')
    result = inference_detector(model, image)
    pred = result.pred_instances
    assert pred.bboxes.shape[1] == 4
    assert len(pred.scores) == len(pred.labels) == len(pred.bboxes)
    return model, result


# -------------------------------------------------------- random weights
@pytest.mark.parametrize('config', SEG_DEMOS, ids=osp.basename)
def test_segmentation_demo_configs_with_random_weights(
        config, image, restore_default_scope):
    seg_apis(config, None, image)


@pytest.mark.slow
@pytest.mark.parametrize('config', SEG_FULL, ids=osp.basename)
def test_full_size_segmentation_configs_with_random_weights(
        config, image, restore_default_scope):
    seg_apis(config, None, image)


@pytest.mark.slow
@pytest.mark.parametrize('config', DET_ALL, ids=osp.basename)
def test_detection_configs_with_random_weights(config, image,
                                               restore_default_scope):
    """The config's own test pipeline, its Resize scaled down from
    1333x800 to 320x320 (a full-size detector on CPU)."""
    cfg = Config.fromfile(config)
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (320, 320)
    det_apis(cfg, None, image)


def test_check_seg_map_size_lets_inference_samples_pass():
    """inference_model and MMSegInferencer drop LoadAnnotations: a sample
    without a mask (and without a mask path) passes; a mask path without
    a loaded mask is a pipeline in the wrong order."""
    from mmbcn.datasets.voc_demo import CheckSegMapSize
    check = CheckSegMapSize(num_classes=len(CLASSES))
    sample = dict(img_path='a.jpg', ori_shape=(5, 6))
    assert check(dict(sample)) == sample
    with pytest.raises(KeyError, match='after LoadAnnotations'):
        check(dict(sample, seg_map_path='a.png'))


# ------------------------------------------------ checkpoints from tools
@pytest.fixture(scope='module')
def seg_checkpoint(tmp_path_factory, voc_shapes):
    """The segmentation demo trained for 2 iterations by tools/train.py."""
    tmp = tmp_path_factory.mktemp('seg')
    cfg = tmp / 'cfg.py'
    cfg.write_text('\n'.join([
        f'_base_ = {SEG_DEMO!r}',
        f"data_root = '{voc_shapes}'",
        'train_dataloader = dict(batch_size=2, num_workers=0, '
        'persistent_workers=False, dataset=dict(data_root=data_root))',
        'val_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root, indices=2))',
        'test_dataloader = val_dataloader',
    ]) + '\n')
    load_tool('train').main([
        str(cfg), '--work-dir', str(tmp / 'work'), '--cfg-options',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2'
    ])
    return str(cfg), str(tmp / 'work' / 'iter_2.pth')


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory):
    """The detection demo trained for 2 iterations by tools/train.py."""
    tmp = tmp_path_factory.mktemp('det')
    root = tmp / 'shapes'
    generate_shapes_coco(str(root), sizes=dict(train=4, val=2))
    cfg = tmp / 'cfg.py'
    cfg.write_text('\n'.join([
        f'_base_ = {DET_DEMO!r}',
        f"data_root = '{root}/'",
        'train_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))',
        'val_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))',
        'test_dataloader = val_dataloader',
        "val_evaluator = dict(ann_file=data_root + "
        "'annotations/instances_val.json')",
        'test_evaluator = val_evaluator',
        'model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))',
    ]) + '\n')
    load_tool('train').main([
        str(cfg), '--work-dir', str(tmp / 'work'), '--cfg-options',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2'
    ])
    return str(cfg), str(tmp / 'work' / 'iter_2.pth')


@pytest.mark.slow
def test_segmentation_demo_checkpoint_with_mmseg_apis(
        seg_checkpoint, image, tmp_path, restore_default_scope):
    from mmseg.apis import MMSegInferencer
    config, checkpoint = seg_checkpoint
    model, result = seg_apis(config, checkpoint, image)
    assert tuple(model.dataset_meta['classes']) == CLASSES
    weights = torch.load(checkpoint, weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[key], msg=key)
    inferencer = MMSegInferencer(model=config, weights=checkpoint,
                                 device='cpu')
    out = inferencer(image, out_dir=str(tmp_path / 'vis'))
    assert np.array_equal(out['predictions'],
                          result.pred_sem_seg.data[0].numpy())
    assert os.listdir(tmp_path / 'vis' / 'vis')


@pytest.mark.slow
def test_detection_demo_checkpoint_with_mmdet_apis(
        det_checkpoint, image, tmp_path, restore_default_scope):
    from mmdet.apis import DetInferencer
    config, checkpoint = det_checkpoint
    model, result = det_apis(config, checkpoint, image)
    assert len(model.dataset_meta['classes']) == 3
    inferencer = DetInferencer(model=config, weights=checkpoint,
                               device='cpu')
    out = inferencer(image, out_dir=str(tmp_path / 'vis'))
    [pred] = out['predictions']
    assert len(pred['scores']) == len(result.pred_instances.scores)
    assert os.listdir(tmp_path / 'vis' / 'vis')


# ------------------------------------------------------- tools/infer.py
@pytest.mark.slow
@pytest.mark.parametrize('task', ['segmentation', 'detection'])
def test_infer_tool_draws_predictions(task, request, image, tmp_path,
                                      restore_default_scope):
    config, checkpoint = request.getfixturevalue(
        'seg_checkpoint' if task == 'segmentation' else 'det_checkpoint')
    second = tmp_path / 'in' / 'other.png'
    second.parent.mkdir()
    Image.open(image).save(second)
    outputs = load_tool('infer').main([
        config, checkpoint, image,
        str(second.parent), '--out-dir',
        str(tmp_path / 'out')
    ])
    assert sorted(outputs.values()) == [
        str(tmp_path / 'out' / 'other.png'),
        str(tmp_path / 'out' / 'shapes_val_0000.png')
    ]
    for src, out in outputs.items():
        drawn = np.asarray(Image.open(out).convert('RGB'))
        assert drawn.shape[:2] == image_hw(src)
    assert sorted(os.listdir(tmp_path / 'out')) == ['other.png',
                                                    'shapes_val_0000.png']


@pytest.fixture
def infer_args(tmp_path, image):
    """A config and a checkpoint file (never loaded: the refusals come
    first) and a PNG input."""
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not loaded')
    png = tmp_path / 'pics' / 'photo.png'
    png.parent.mkdir()
    Image.open(image).save(png)
    return [SEG_DEMO, str(ckpt)], png


def test_infer_refuses_to_draw_over_an_input(infer_args):
    args, png = infer_args
    before = png.read_bytes()
    with pytest.raises(OutputPathError, match='photo.png.*is the image 0'):
        load_tool('infer').main(args + [str(png), '--out-dir',
                                        str(png.parent)])
    assert png.read_bytes() == before


def test_infer_refuses_two_images_of_one_name(infer_args, image, tmp_path):
    args, png = infer_args
    other = tmp_path / 'more' / 'photo.jpg'
    other.parent.mkdir()
    other.write_bytes(open(image, 'rb').read())
    with pytest.raises(OutputPathError, match='would both be drawn'):
        load_tool('infer').main(args + [str(png), str(other), '--out-dir',
                                        str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_infer_names_a_bad_image(infer_args, tmp_path):
    args, _ = infer_args
    infer = load_tool('infer')
    with pytest.raises(FileNotFoundError, match='nothere.jpg'):
        infer.main(args + [str(tmp_path / 'nothere.jpg'), '--out-dir',
                           str(tmp_path / 'out')])
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    with pytest.raises(infer.InputError, match=r'empty\.jpg.*0 bytes'):
        infer.main(args + [str(empty), '--out-dir', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_infer_help_and_command_line_errors(tmp_path):
    infer = load_tool('infer')
    with pytest.raises(SystemExit) as done:
        infer.parse_args(['--help'])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        infer.parse_args([SEG_DEMO, 'x.pth', 'a.jpg'])  # no --out-dir
    assert done.value.code == 2


@pytest.mark.slow
def test_infer_script_reports_errors_without_a_traceback(tmp_path):
    with pytest.raises(AssertionError) as failed:
        run([sys.executable, 'tools/infer.py', SEG_DEMO,
             str(tmp_path / 'none.pth'), 'a.jpg', '--out-dir',
             str(tmp_path)], timeout=300)
    message = str(failed.value)
    assert "checkpoint file '" in message and 'none.pth' in message
    assert 'Traceback' not in message
