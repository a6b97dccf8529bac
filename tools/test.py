# Copyright (c) mmbcn contributors. All rights reserved.
"""Evaluate a checkpoint with the config's test dataloader and metrics.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show-dir DIR [--show-interval N]] [--allow-partial]
        [--cfg-options k=v ...] [--launcher pytorch]

Checkpoints are read with torch.load(weights_only=True). A checkpoint
that leaves model keys unloaded (another model's) is refused, naming the
keys, unless --allow-partial. ``--show-dir`` draws the predictions on
the test images with the config's visualizer (mmdet: DIR/<image name>;
mmseg: DIR/vis_data/vis_image/). ``--out`` may not name the checkpoint or
the config (refused before anything runs). The metrics file
(WORK_DIR/TIMESTAMP/TIMESTAMP.json) is written by the main process only.
"""
import argparse
import os.path as osp

import mmbcn  # noqa: F401
from mmbcn.engine.runner_support import (add_weights_only_checkpoints,
                                         enable_show_dir, load_tool_config,
                                         prepare_and_check_data,
                                         prepare_cpu_distributed,
                                         write_results_on_main_process)
from mmbcn.utils import OutputPathError, check_outputs
from train import build_runner, parse_run_args  # tools/train.py


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument('--out', help='dump predictions to this pickle '
                        'file (mmdet/mmseg DumpResults)')
    parser.add_argument(
        '--show-dir', help='draw the predictions on the test images into '
        'this folder')
    parser.add_argument('--show-interval', type=int, default=1,
                        help='with --show-dir: draw every N-th image '
                        '(default: every one)')
    parser.add_argument(
        '--allow-partial', action='store_true',
        help='evaluate even if the checkpoint leaves model keys unloaded')
    return parse_run_args(parser, argv)


def check_out(args) -> None:
    """``--out`` must be a ``.pkl`` file that is neither input (an
    mmengine checkpoint may be named ``.pkl`` too) nor a folder."""
    if not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out {args.out!r} must be a .pkl file')
    if osp.isdir(args.out):
        raise OutputPathError(f'--out {args.out!r} is a folder; name the '
                              'predictions file to write, e.g. '
                              f'{osp.join(args.out, "predictions.pkl")}')
    check_outputs({'--out': args.out}, {'CHECKPOINT': args.checkpoint,
                                        'CONFIG': args.config})


def main(argv=None):
    args = parse_args(argv)
    for what, path in (('config', args.config),
                       ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} file {path!r} not found')
    if args.out is not None:
        check_out(args)
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options,
                           args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    add_weights_only_checkpoints(cfg, allow_partial=args.allow_partial)
    write_results_on_main_process(cfg)
    if args.out is not None:
        scope = cfg.get('default_scope', 'mmdet')
        cfg.test_evaluator = list(cfg.test_evaluator) if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        cfg.test_evaluator.append(
            dict(type=f'{scope}.DumpResults' if scope == 'mmdet' else
                 'DumpResults', out_file_path=args.out))
    if args.show_dir is not None:
        enable_show_dir(cfg, args.show_dir, args.show_interval)
    prepare_cpu_distributed(cfg, args.launcher)
    prepare_and_check_data(cfg, ['test_dataloader'])
    return build_runner(cfg).test()


if __name__ == '__main__':
    main()
