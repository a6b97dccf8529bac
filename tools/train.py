# Copyright (c) mmbcn contributors. All rights reserved.
"""Train an mmdet or mmseg model (BCN or not) from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--allow-partial] [--tensorboard]
        [--cfg-options k=v ...] [--launcher pytorch]

Checkpoints are read with torch.load(weights_only=True) and written so
that a failure while saving never loses the previous one. ``--resume``
without a path continues from the newest checkpoint of the work directory
that loads (a truncated newer one is skipped with a warning; a
``last_checkpoint`` naming a file elsewhere is ignored). One run at a time
per work directory: a second run into a work directory that a live run
holds stops before writing anything. ``train_cfg.max_iters`` /
``max_epochs`` / ``val_interval`` must be whole numbers >= 1. ``--amp`` (mixed
precision) needs a CUDA device (or an NPU, MLU or MUSA device that mmengine
supports): without one it is refused before anything is built.

Multi-GPU / multi-process: tools/dist_train.sh (torchrun), Slurm:
tools/slurm_train.sh. On machines without CUDA the processes use gloo.
"""
import argparse
import contextlib
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.device import (is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmbcn  # noqa: F401  (registers BCN, SyncBCN, WSConv, hooks)
from mmbcn.engine import find_resume_checkpoint
from mmbcn.engine.runner_support import (add_tensorboard,
                                         add_weights_only_checkpoints,
                                         check_checkpoint_paths,
                                         check_train_cfg, is_first_process,
                                         load_tool_config,
                                         prepare_and_check_data,
                                         prepare_cpu_distributed,
                                         work_dir_lock,
                                         write_results_on_main_process)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the total batch size '
                        '(auto_scale_lr in the config)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--allow-partial', action='store_true',
        help='let load_from leave model keys unloaded (by default a '
        'checkpoint of another model is refused, naming the keys)')
    parser.add_argument(
        '--tensorboard', action='store_true',
        help='also log to TensorBoard (TensorboardVisBackend; needs the '
        'tensorboard package): events under WORK_DIR/TIMESTAMP/vis_data')
    return parse_run_args(parser, argv)


def parse_run_args(parser: argparse.ArgumentParser, argv=None):
    """``argv`` parsed with the options this tool and tools/test.py add
    last (--cfg-options, --launcher, --local-rank); LOCAL_RANK set from
    --local-rank unless the launcher set it."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy (lists: key="[a,b]")')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_runner(cfg):
    """The config's Runner (its ``runner_type`` if it names one)."""
    return (Runner.from_cfg(cfg)
            if 'runner_type' not in cfg else RUNNERS.build(cfg))


def check_amp_device(args) -> None:
    """Refuse ``--amp`` where no device can run it, before anything is
    built: mmengine's ``AmpOptimWrapper`` runs on CUDA (or NPU, MLU, MUSA)
    only, and would otherwise fail once the Runner is built."""
    if not args.amp:
        return
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise RuntimeError(
            '--amp: mixed precision training (AmpOptimWrapper) needs a '
            'CUDA device, and none is available on this machine; train '
            'without --amp')


def build_config(args) -> Config:
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options,
                           args.work_dir)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError('--auto-scale-lr needs auto_scale_lr.'
                           'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.load_from = find_resume_checkpoint(cfg.work_dir,
                                               checkpoint_folders(cfg))
        # nothing to resume: start afresh (mmengine would otherwise follow
        # last_checkpoint wherever it points)
        cfg.resume = cfg.load_from is not None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume: {args.resume!r} not found')
        cfg.resume, cfg.load_from = True, args.resume
    add_weights_only_checkpoints(cfg, allow_partial=args.allow_partial)
    write_results_on_main_process(cfg)
    if args.tensorboard:
        add_tensorboard(cfg)
    return cfg


def checkpoint_folders(cfg) -> list:
    """Where the run's checkpoint hook saves when not in the work
    directory (its ``out_dir``, plus the work directory's name, as
    mmengine's CheckpointHook does)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    out_dir = hook.get('out_dir') if isinstance(hook, dict) else None
    if not isinstance(out_dir, str) or '://' in out_dir:
        return []
    return [osp.join(out_dir, osp.basename(cfg.work_dir.rstrip(osp.sep)))]


def main(argv=None):
    args = parse_args(argv)
    check_amp_device(args)
    cfg = build_config(args)
    check_train_cfg(cfg)
    with contextlib.ExitStack() as stack:
        prepare_cpu_distributed(cfg, args.launcher)
        prepare_and_check_data(cfg, ['train_dataloader', 'val_dataloader'])
        if not cfg.get('resume'):
            check_checkpoint_paths(cfg)
        if is_first_process(args.launcher):
            # after the checks (a refused run leaves no work directory),
            # before anything is written into it: a second run into this
            # work directory stops here
            stack.enter_context(work_dir_lock(cfg.work_dir))
        runner = build_runner(cfg)
        runner.train()
    return runner


if __name__ == '__main__':
    main()
