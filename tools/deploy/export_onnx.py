# Copyright (c) mmbcn contributors. All rights reserved.
"""Fold BCN and WS, export to ONNX, and check the file with onnxruntime on
a real image.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT OUT.onnx
        [--index I] [--rtol R] [--cfg-options k=v ...]

* The model is built from CONFIG, loaded from CHECKPOINT (read with
  ``torch.load(weights_only=True)``; every key must match), put in eval
  mode and folded (``mmbcn.deploy.fold_bcn``: BCN's batch step and WS go
  into the convolutions, BCN's group step becomes ``nn.GroupNorm``). A BCN
  that cannot be folded stops the export, naming it.
* Exported (``torch.onnx.export(dynamo=False)``, opset 17, dynamic batch,
  height and width): a segmentor whole (image -> logits at the image's
  size); a detector's backbone + neck (+ RPN head maps): proposals,
  RoIAlign and NMS need mmdeploy.
* Checked: the I-th image (default 0) of the config's test dataset (the
  bundled demo data is generated if missing), through the test pipeline and
  the model's data preprocessor, runs through onnxruntime and through the
  unfolded PyTorch model; the tool prints the max abs and max rel errors
  (rel: max |diff| / max |PyTorch output|, per output) of the folded model
  and of the ONNX file. Above ``--rtol`` (default 1e-4) nothing is written.

OUT must end in .onnx and may not be CONFIG or CHECKPOINT; it is written
to a temporary file and renamed into place only after the check passed.
Exits 0 on success, printing one final line ``onnx-check: {...}`` (JSON).
"""
import argparse
import json
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS

import mmbcn  # noqa: F401
from mmbcn.deploy import fold_bcn
from mmbcn.deploy.onnx_export import (compare, export, export_target,
                                      flat_tensors, output_names,
                                      run_onnxruntime)
from mmbcn.engine import load_model_weights
from mmbcn.engine.runner_support import prepare_and_check_data
from mmbcn.utils import (OutputPathError, atomic_outputs, build_model,
                         check_outputs, scoped_build)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fold BCN/WS, export to ONNX, check with onnxruntime')
    parser.add_argument('config', help='config of the BCN model')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('out', help='ONNX file to write (.onnx)')
    parser.add_argument('--index', type=int, default=0,
                        help='test-set image to check with (default 0)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest relative error accepted')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy')
    return parser.parse_args(argv)


def load_model(cfg: Config, checkpoint: str) -> torch.nn.Module:
    """The config's model with the checkpoint's weights (all keys), eval."""
    model = build_model(cfg)
    load_model_weights(model, checkpoint)
    return model.eval()


def real_input(cfg: Config, model, index: int):
    """``(input tensor, image path)``: test image ``index`` through the
    test pipeline and ``model.data_preprocessor``."""
    prepare_and_check_data(cfg, ['test_dataloader'])
    dataset = scoped_build(cfg.test_dataloader.dataset,
                           cfg.get('default_scope'), DATASETS)
    if not 0 <= index < len(dataset):
        raise IndexError(f'--index {index}: the test set has '
                         f'{len(dataset)} images')
    sample = dataset[index]
    with torch.no_grad():
        data = model.data_preprocessor(pseudo_collate([sample]), False)
    return data['inputs'], sample['data_samples'].img_path


def main(argv=None) -> dict:
    args = parse_args(argv)
    for what, path in (('config', args.config),
                       ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path!r} not found')
    if not args.out.lower().endswith('.onnx'):
        raise OutputPathError(f'OUT {args.out!r} must end in .onnx')
    check_outputs({'OUT': args.out},
                  {'CONFIG': args.config, 'CHECKPOINT': args.checkpoint})
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    model = load_model(cfg, args.checkpoint)
    x, image = real_input(cfg, model, args.index)
    original, what = export_target(model)
    with torch.no_grad():
        want = flat_tensors(original(x))

    report = fold_bcn(model)  # in place: `original` now wraps the folded
    print(report)
    if not report.complete:
        raise RuntimeError(
            'cannot export: BCN left unfolded (exporting it would need the '
            'BCN op in ONNX): ' + '; '.join(
                f'{p}: {why}' for p, why in report.unfoldable))
    target = original
    with torch.no_grad():
        folded = flat_tensors(target(x))
    fold_error = compare(folded, want)
    names = output_names(target, len(folded))

    with atomic_outputs(args.out) as (tmp, ):
        export(target, x, tmp, names)
        import onnx
        onnx.checker.check_model(tmp)
        onnx_error = compare(run_onnxruntime(tmp, x), want)
        result = dict(
            exported=what, exporter='torch.onnx.export(dynamo=False)',
            opset=onnx.load(tmp).opset_import[0].version,
            image=image, input_shape=list(x.shape), outputs=len(want),
            fold_max_abs=fold_error.max_abs, fold_max_rel=fold_error.max_rel,
            onnx_max_abs=onnx_error.max_abs, onnx_max_rel=onnx_error.max_rel)
        print(f'exported: {what}; checked on {image} {tuple(x.shape)}')
        print(f'folded PyTorch vs original: {fold_error}')
        print(f'onnxruntime vs original PyTorch: {onnx_error}')
        if not onnx_error.max_rel <= args.rtol:
            raise RuntimeError(
                f'the ONNX model differs from PyTorch: max rel error '
                f'{onnx_error.max_rel:.3g} > --rtol {args.rtol:g} '
                f'({args.out} not written)')
    print(f'wrote {args.out}')
    print('onnx-check: ' + json.dumps(result))
    return result


if __name__ == '__main__':
    try:
        main()
    except (OutputPathError, FileNotFoundError, RuntimeError) as err:
        print(f'export_onnx: {err}', file=sys.stderr)
        sys.exit(1)
