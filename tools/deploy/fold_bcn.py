# Copyright (c) mmbcn contributors. All rights reserved.
"""Fold BCN's batch step and WS into the convolutions of a trained model.

    python tools/deploy/fold_bcn.py CONFIG CHECKPOINT OUT [--out-config FILE]
        [--cfg-options k=v ...] [--verify-shape N C H W] [--rtol R]
        [--no-verify]

Writes two files:

* ``OUT`` (e.g. ``model_folded.pth``): ``{'meta': {...}, 'state_dict': ...}``
  of plain tensors and strings, loadable with
  ``torch.load(OUT, weights_only=True)``; not a ``.py`` file;
* the folded config (``--out-config``, default ``OUT`` with ``.py``): the
  original config with ``GN`` for every BCN and ``FoldedConv`` (a plain
  ``nn.Conv2d`` with a bias) for WS convolutions and the convolutions before
  a BCN; ``load_from`` points at ``OUT``.

Inference then needs nothing of BCN or WS::

    python tools/test.py OUT_CONFIG OUT

The tool prints every change it made to the config and every place that
could not be folded; if any BCN cannot be folded it writes nothing and
exits with status 1 (a config cannot mix a GN model with a leftover BCN;
``mmbcn.deploy.fold_bcn`` still folds the rest of an in-memory model).
Unless ``--no-verify``, the model built from the written config is compared
with the original model in eval mode on a random input: the output of
``model(x, mode='tensor')`` where the model allows it without data samples
(segmentors), else of ``model.extract_feat(x)`` (detectors: backbone and
neck; every folded pair was computed from the same formulas). The input
checkpoint is read with ``torch.load(weights_only=True)``.

Neither output may be an input (CONFIG, CHECKPOINT), the other output or
a folder, and the derived config (OUT with .py) never replaces a file
that no argument named (unless an earlier fold to OUT wrote it): such
paths are refused before anything is read. Both files are written to
temporary files and renamed into place together when everything, the
check included, succeeded: a failure (full disk, a failed check) leaves
neither, and an earlier OUT / config as it was. New files get the mode the
user's umask gives.
"""
import argparse
import copy
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

import mmbcn  # noqa: F401
from mmbcn.deploy import fold_bcn, folded_config, transfer_state
from mmbcn.engine import load_model_weights, load_weights_only
from mmbcn.utils import (OutputPathError, atomic_outputs, build_model,
                         check_outputs)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fold BCN and WS into the convolutions (deployment)')
    parser.add_argument('config', help='config of the BCN model')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('out', help='folded checkpoint to write (.pth)')
    parser.add_argument('--out-config',
                        help='folded config to write (default: OUT with '
                        '.py)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy')
    parser.add_argument('--verify-shape', type=int, nargs=4,
                        default=[1, 3, 224, 224], metavar=('N', 'C', 'H',
                                                           'W'),
                        help='random input for the check (default: '
                        '1 3 224 224)')
    parser.add_argument('--rtol', type=float, default=1e-4,
                        help='largest relative error the check accepts '
                        '(max |diff| / max |reference| per output)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the output check')
    args = parser.parse_args(argv)
    if min(args.verify_shape) < 1:
        parser.error(f'--verify-shape {" ".join(map(str, args.verify_shape))}'
                     ': N, C, H and W must all be >= 1 (e.g. 1 3 224 224; C '
                     "is the model's input channels)")
    if not args.rtol >= 0 or args.rtol == float('inf'):
        parser.error(f'--rtol {args.rtol}: must be a finite number >= 0')
    return args


def tensor_outputs(model, x):
    """What the check compares: the model's tensor-mode outputs if it runs
    without data samples, else ``extract_feat``; flattened to a list."""
    with torch.no_grad():
        try:
            out, what = model(x, mode='tensor'), "model(x, mode='tensor')"
        except Exception:  # detectors need data samples for their heads
            if not hasattr(model, 'extract_feat'):
                raise
            out, what = model.extract_feat(x), 'model.extract_feat(x)'
    flat, stack = [], [out]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.Tensor):
            flat.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return flat, what


def max_relative_error(got, want) -> float:
    if len(got) != len(want):
        raise RuntimeError(f'{len(got)} outputs vs {len(want)}')
    errors = [((g - w).abs().max() / w.abs().max().clamp(min=1e-30)).item()
              for g, w in zip(got, want)]
    return max(errors) if errors else 0.0


def output_paths(args) -> tuple:
    """``(OUT, folded config)``; raises OutputPathError if either would
    replace an input (config, checkpoint), OUT is a config file, either is
    a folder, or the derived config (OUT with .py, no --out-config) would
    replace a file that an earlier fold to OUT did not write."""
    if args.out.lower().endswith('.py'):
        raise OutputPathError(
            f'OUT {args.out!r} ends in .py: OUT is the folded checkpoint '
            '(e.g. model_folded.pth); the folded config goes to OUT with '
            '.py or --out-config')
    out_config = args.out_config or osp.splitext(args.out)[0] + '.py'
    for role, path, example in (('OUT', args.out, 'model_folded.pth'),
                                ('the folded config', out_config,
                                 'model_folded.py')):
        if osp.isdir(path):
            raise OutputPathError(
                f'{role} {path!r} is a folder; name the file to write, '
                f'e.g. {osp.join(path, example)}')
    check_outputs({'OUT': args.out, 'the folded config': out_config},
                  {'CONFIG': args.config, 'CHECKPOINT': args.checkpoint})
    if args.out_config is None and osp.exists(out_config) and \
            not written_by_fold(args.out, out_config):
        raise OutputPathError(
            f'the folded config would go to {out_config!r} (OUT with .py), '
            'which exists and was not written by a fold to OUT '
            f'{args.out!r}: it is left alone. Name the config to write with '
            '--out-config (that path may be replaced), or choose another '
            'OUT')
    return args.out, out_config


def written_by_fold(out: str, out_config: str) -> bool:
    """Whether ``out`` is a folded checkpoint whose meta records that its
    fold wrote ``out_config`` (so a new fold to ``out`` may replace it)."""
    if not osp.isfile(out):
        return False
    try:
        meta = load_weights_only(out, 'cpu', mmap=True).get('meta', {})
        return osp.realpath(meta['mmbcn_fold']['config']) == \
            osp.realpath(out_config)
    except Exception:  # not a fold output: not ours to replace
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config {args.config!r} not found')
    out, out_config = output_paths(args)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    model = build_model(cfg, cfg.get('default_scope', 'mmdet'))
    load_model_weights(model, args.checkpoint)
    model.eval()
    original = None if args.no_verify else copy.deepcopy(model)

    report = fold_bcn(model)
    print(report)
    if not report.complete:
        print('nothing written: a config cannot express a GN model with '
              'BCN left in it; fold in Python with '
              'mmbcn.deploy.fold_bcn(model) to keep the rest folded',
              file=sys.stderr)
        return 1

    new_cfg, changes = folded_config(cfg)
    new_cfg.load_from = out
    print('config changes:')
    for line in changes:
        print(f'  {line}')
    # both files appear together, complete, or neither does
    with atomic_outputs(out, out_config) as (tmp_out, tmp_config):
        new_cfg.dump(tmp_config)
        folded = Config.fromfile(tmp_config)
        target = build_model(folded, folded.get('default_scope', 'mmdet'))
        paired = transfer_state(model, target)
        target.eval()
        meta = dict(
            mmbcn_fold=dict(
                source_config=osp.abspath(args.config),
                source_checkpoint=osp.abspath(args.checkpoint),
                config=osp.abspath(out_config),
                folded=len(report.folded),
                standardized=len(report.standardized)))
        if original is not None:
            meta['mmbcn_fold']['max_relative_error'] = verify(
                original, target, args)
        torch.save(dict(meta=meta, state_dict=target.state_dict()), tmp_out)
    print(f'{paired} modules with state; wrote {out} and {out_config}')
    print(f'inference: python tools/test.py {out_config} {out}')
    return 0


def verify(original, target, args) -> float:
    """Max relative error of the folded model on a random input; raises
    (nothing is written) above ``--rtol``."""
    x = torch.randn(*args.verify_shape,
                    generator=torch.Generator().manual_seed(0))
    want, what = tensor_outputs(original, x)
    got, _ = tensor_outputs(target, x)
    error = max_relative_error(got, want)
    print(f'check on a random {tuple(x.shape)} input, {what}: '
          f'max relative error {error:.3g} (rtol {args.rtol:g})')
    if not error <= args.rtol:
        raise RuntimeError(
            f'the folded model differs from the original: relative '
            f'error {error:.3g} > {args.rtol:g} (nothing written)')
    return error


if __name__ == '__main__':
    sys.exit(main())
