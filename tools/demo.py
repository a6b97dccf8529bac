# Copyright (c) mmbcn contributors. All rights reserved.
"""The main job: BCN+WS against GN+WS, trained side by side from scratch on
the bundled data with the same seed, schedule, model and hyper-parameters
except the normalization; one table, two pictures.

    python tools/demo.py [--task {detection,segmentation}]
        [--data {shapes,shapes-hard}] [--max-iters N]
        [--seed S] [--work-dir DIR] [--img-size PX] [--val-interval N]
        [--sequential] [--threads T] [--runs bcn gn [bn]]
        [--cfg-options k=v ...] [--bcn-cfg-options k=v ...]
        [--pretrained [--pretrain-iters N] [--pretrain-seed S]
         [--pretrain-cache DIR]
         [--pretrain-cfg-options k=v ...]]
    python tools/demo.py --summarize WORK_DIR [WORK_DIR ...]

Detection (default): Mask R-CNN R-18-FPN, BCN+WS in micro-batch mode (one
image per iteration, Algorithm 1's estimates, ``BCNUpdateRateHook``)
against GN+WS; bbox and segm mAP / mAP@50 from mmdet's CocoMetric. Its
data: the bundled shapes (``--data shapes``, the configs' own) or their
harder variant (``--data shapes-hard``: textured backgrounds, 1-5 shapes of
any colour, 160-256 px images; ``mmbcn.datasets.coco_demo``), set by the
config options of ``mmbcn.demo.tasks.DATA`` ahead of ``--cfg-options``.
Segmentation: the DeepLabV3 demo pair (SyncBCN+WS against GN+WS; ``--runs
bcn gn bn`` adds SyncBN with plain convolutions); mIoU from mmseg's
IoUMetric.

By default the runs train at the same time, one thread each (a 2-core
machine runs the whole demo in one run's time); ``--sequential`` trains one
after the other with ``--threads`` threads. The work dir receives
``results.md`` / ``results.json`` (the table), ``curves.png`` (training loss
and validation metric against iteration), ``predictions.png`` (the models
on the same validation images beside the ground truth) and one folder per
run (config, logs, checkpoint). Runs trained into the work dir of a
finished demo join its table when the settings match.

The parts live in ``mmbcn.demo``; this script is its command line and the
entry point of its worker processes (``--worker JOB``: train one run with
tools/train.py).
"""
import argparse
import os
import os.path as osp

from mmbcn.demo.results import summarize
from mmbcn.demo.tasks import (DATA, DEFAULT_DATA, DEFAULT_RUNS, REPO, RUNS,
                              TASKS)


# --------------------------------------------------------------- arguments
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', default='detection', choices=sorted(TASKS))
    parser.add_argument(
        '--data',
        default=DEFAULT_DATA,
        choices=sorted(DATA),
        help='detection: the bundled shapes data (default) or its harder '
        'variant (data/shapes_coco_hard/); its config options come before '
        '--cfg-options')
    parser.add_argument(
        '--work-dir',
        help='default: work_dirs/demo '
        '(work_dirs/demo_segmentation for segmentation)')
    parser.add_argument(
        '--max-iters',
        type=int,
        help="every run's iterations (default: the config's); "
        'the lr schedule is scaled to it')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--val-interval',
        type=int,
        help='validate every N iterations (default: 4 '
        'points per run) and at the end')
    parser.add_argument(
        '--img-size',
        type=int,
        help='detection: resize images to fit PX x PX '
        "(default: the config's)")
    parser.add_argument(
        '--runs',
        nargs='+',
        default=list(DEFAULT_RUNS),
        choices=list(RUNS),
        help='which runs to train: bcn (BCN+WS), gn (GN+WS), bn '
        '(segmentation: SyncBN, plain convolutions). Runs added to the '
        'work dir of a finished demo join its table when their settings '
        '(seed, iterations, schedule, data) match')
    parser.add_argument(
        '--sequential',
        action='store_true',
        help='train one run after the other (default: '
        'all at once, one thread each)')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='threads per run (default: 1 when the runs '
        'are concurrent, else torch\'s default)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='K=V',
        help='config overrides for every run '
        '(as tools/train.py)')
    parser.add_argument(
        '--bcn-cfg-options',
        nargs='+',
        default=[],
        metavar='K=V',
        help='config overrides for the BCN '
        'run only (e.g. custom_hooks.0.multiplier=0.1)')
    parser.add_argument(
        '--pretrained',
        action='store_true',
        help='detection: fine-tune from backbones pretrained on the '
        'bundled classification set (BCN+WS / GN+WS, large batch; '
        'cached; mmbcn.demo.pretrain)')
    parser.add_argument(
        '--pretrain-iters',
        type=int,
        help="--pretrained: pretraining iterations (default: the "
        "pretraining config's)")
    parser.add_argument(
        '--pretrain-seed',
        type=int,
        help='--pretrained: the pretraining seed (default: --seed); one '
        'pretrained backbone fine-tuned with several --seed values is '
        "the paper's protocol (one ImageNet model per normalization)")
    parser.add_argument(
        '--pretrain-cache',
        help='--pretrained: where pretrained backbones are cached '
        '(default: work_dirs/pretrain_cache)')
    parser.add_argument(
        '--pretrain-cfg-options',
        nargs='+',
        default=[],
        metavar='K=V',
        help='--pretrained: overrides of both pretraining configs')
    parser.add_argument(
        '--summarize',
        nargs='+',
        metavar='WORK_DIR',
        help='print mean +- std over the results.json of '
        'these finished demos (e.g. several seeds), per run and of '
        'each run\'s paired difference to GN+WS, and exit')
    parser.add_argument('--worker', metavar='JOB', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data != DEFAULT_DATA and args.task != 'detection':
        parser.error(f'--data {args.data} applies to --task detection '
                     f'(--task {args.task} trains on its own data: leave '
                     f'--data at {DEFAULT_DATA})')
    # every run's config, the data preparation and the settings that rows
    # of one table share see the data through the config options
    args.cfg_options = DATA[args.data] + args.cfg_options
    if args.work_dir is None:
        args.work_dir = ('work_dirs/demo' if args.task == 'detection' else
                         'work_dirs/demo_segmentation')
        if args.pretrained:
            args.work_dir += '_pretrained'
        if args.data != DEFAULT_DATA:
            args.work_dir += f'_{args.data}'
    known = TASKS[args.task]['runs']
    unknown = [r for r in args.runs if r not in known]
    if unknown:
        parser.error(f'--runs {" ".join(unknown)}: not a run of --task '
                     f'{args.task} (it has {", ".join(known)})')
    if args.pretrained and args.task != 'detection':
        parser.error('--pretrained applies to --task detection')
    if args.pretrain_seed is None:
        args.pretrain_seed = args.seed
    if args.pretrain_iters is not None and args.pretrain_iters < 1:
        parser.error('--pretrain-iters must be >= 1')
    args.pretrain_cache = osp.abspath(
        args.pretrain_cache or osp.join(REPO, 'work_dirs', 'pretrain_cache'))
    for flag in ('max_iters', 'val_interval', 'img_size', 'threads'):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f'--{flag.replace("_", "-")} {value}: must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        import train  # tools/train.py, beside this script
        from mmbcn.demo.worker import run_job
        return run_job(args.worker, train.main)
    if args.summarize:
        lines = summarize(args.summarize)
        print('\n'.join(lines))
        return lines
    from mmbcn.demo.launch import run_demo
    args.work_dir = osp.abspath(args.work_dir)
    os.chdir(REPO)  # the configs' data roots are relative to it
    return run_demo(args)


if __name__ == '__main__':
    main()
