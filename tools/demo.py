# Copyright (c) mmbcn contributors. All rights reserved.
"""The main job: BCN+WS against GN+WS, trained side by side from scratch on
the bundled data with the same seed, schedule, model and hyper-parameters
except the normalization; one table, two pictures.

    python tools/demo.py [--task {detection,segmentation}] [--max-iters N]
        [--seed S] [--work-dir DIR] [--img-size PX] [--val-interval N]
        [--sequential] [--threads T] [--runs bcn gn]
        [--cfg-options k=v ...] [--bcn-cfg-options k=v ...]
        [--pretrained [--pretrain-iters N] [--pretrain-seed S]
         [--pretrain-cache DIR]
         [--pretrain-cfg-options k=v ...]]

Detection (default): Mask R-CNN R-18-FPN, BCN+WS in micro-batch mode (one
image per iteration, Algorithm 1's estimates, ``BCNUpdateRateHook``)
against GN+WS; bbox and segm mAP / mAP@50 from mmdet's CocoMetric.
Segmentation: the DeepLabV3 demo pair (SyncBCN+WS against GN+WS); mIoU from
mmseg's IoUMetric.

By default the two runs train at the same time, one thread each (a 2-core
machine runs the whole demo in one run's time); ``--sequential`` trains one
after the other with ``--threads`` threads. The work dir receives
``results.md`` / ``results.json`` (the table), ``curves.png`` (training loss
and validation metric against iteration), ``predictions.png`` (both models
on the same validation images beside the ground truth) and one folder per
run (config, logs, checkpoint).
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import resource
import subprocess
import sys
import time

from mmbcn.utils.atomic import atomic_outputs
from mmbcn.utils.markdown import markdown_table

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)

TASKS = {
    'detection':
    dict(
        runs={
            'bcn': ('BCN+WS',
                    'configs/mask_rcnn/mask-rcnn_r18_fpn_bcn-ws-all_demo.py'),
            'gn':
            ('GN+WS', 'configs/mask_rcnn/mask-rcnn_r18_fpn_gn-ws-all_demo.py'),
        },
        metrics=[('bbox mAP', 'coco/bbox_mAP'),
                 ('bbox mAP@50', 'coco/bbox_mAP_50'),
                 ('segm mAP', 'coco/segm_mAP'),
                 ('segm mAP@50', 'coco/segm_mAP_50')],
        curves=[('coco/bbox_mAP', 'bbox mAP'), ('coco/segm_mAP', 'segm mAP')]),
    'segmentation':
    dict(
        runs={
            'bcn': ('SyncBCN+WS', 'configs/deeplabv3/deeplabv3_r18b-d16_'
                    'syncbcn-ws_1xb4-1k_voc-shapes-128x128_demo.py'),
            'gn': ('GN+WS', 'configs/deeplabv3/deeplabv3_r18b-d16_gn-ws_'
                   '1xb4-1k_voc-shapes-128x128_demo.py'),
            'bn': ('SyncBN', 'configs/deeplabv3/deeplabv3_r18b-d16_syncbn_'
                   '1xb4-1k_voc-shapes-128x128_demo.py'),
        },
        metrics=[('mIoU', 'mIoU'), ('mAcc', 'mAcc'), ('aAcc', 'aAcc')],
        curves=[('mIoU', 'mIoU')]),
}
RUNS = ('bcn', 'gn', 'bn')  # the order of rows, curves and pictures
REFERENCE = 'GN+WS'  # --summarize: paired differences against this run
SHOW_IMAGES = 4  # validation images in predictions.png (the first ones)
SCORE_THR = 0.3  # detections drawn in predictions.png


# --------------------------------------------------------------- arguments
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', default='detection', choices=sorted(TASKS))
    parser.add_argument(
        '--work-dir',
        help='default: work_dirs/demo '
        '(work_dirs/demo_segmentation for segmentation)')
    parser.add_argument(
        '--max-iters',
        type=int,
        help="both runs' iterations (default: the config's); "
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
        default=['bcn', 'gn'],
        choices=list(RUNS),
        help='which runs to train: bcn (BCN+WS), gn (GN+WS), bn '
        '(segmentation: SyncBN, plain convolutions). Runs added to the '
        'work dir of a finished demo join its table when their settings '
        '(seed, iterations, schedule, data) match')
    parser.add_argument(
        '--sequential',
        action='store_true',
        help='train one run after the other (default: '
        'both at once, one thread each)')
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
        help='config overrides for both runs '
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
        'cached, tools/demo_pretrain.py)')
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
        'these finished demos (e.g. several seeds) and '
        'exit')
    parser.add_argument(
        '--worker', nargs=2, metavar=('RUN', 'CONFIG'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.work_dir is None:
        args.work_dir = ('work_dirs/demo' if args.task == 'detection' else
                         'work_dirs/demo_segmentation')
        if args.pretrained:
            args.work_dir += '_pretrained'
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


# ------------------------------------------------------------ run configs
def scaled_schedule(schedulers, old_max: int, new_max: int):
    """The iteration-based schedulers of a run of ``old_max`` iterations,
    stretched to ``new_max``: phases that end with the run still do,
    milestones keep their fraction of the run, warm-ups keep their length
    (shortened to fit)."""
    out = []
    for s in schedulers:
        s = dict(s)
        if s.get('by_epoch', True):
            raise ValueError(f'{s["type"]}: the demo scales iteration-based '
                             'schedules only')
        if s.get('end') is not None and s['end'] >= old_max:
            s['end'] = new_max
        elif s.get('end') is not None:
            s['end'] = min(s['end'], new_max)
        if 'milestones' in s:
            s['milestones'] = [
                max(1, min(new_max, round(m * new_max / old_max)))
                for m in s['milestones']
            ]
        out.append(s)
    return out


def _resize_steps(pipeline):
    return [i for i, t in enumerate(pipeline) if t['type'] == 'Resize']


def write_run_config(config: str, out_dir: str, args) -> str:
    """A config that inherits ``config`` and sets what the demo chooses
    (iterations, schedule, validation points, seed, image size); returns
    its path."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    old_max = cfg.train_cfg.max_iters
    max_iters = args.max_iters or old_max
    val_interval = args.val_interval or max(1, math.ceil(max_iters / 4))
    lines = [
        '# Written by tools/demo.py: the demo config with its run settings.',
        f'_base_ = {osp.abspath(config)!r}',
        f'train_cfg = dict(max_iters={max_iters}, '
        f'val_interval={val_interval})',
        'param_scheduler = ' + repr([
            dict(s)
            for s in scaled_schedule(cfg.param_scheduler, old_max, max_iters)
        ]),
        f'default_hooks = dict(checkpoint=dict(interval={max_iters}))',
        f'randomness = dict(seed={args.seed})',
    ]
    if args.img_size:
        if args.task != 'detection':
            raise SystemExit('--img-size applies to --task detection')
        scale = (args.img_size, args.img_size)
        for loader in ('train_dataloader', 'val_dataloader'):
            pipeline = [dict(t) for t in cfg[loader].dataset.pipeline]
            for i in _resize_steps(pipeline):
                pipeline[i]['scale'] = scale
            lines.append(f'{loader} = dict(dataset=dict(pipeline='
                         f'{pipeline!r}))')
        lines.append('test_dataloader = val_dataloader')
    path = osp.join(out_dir, 'demo_config.py')
    with atomic_outputs(path) as (tmp, ):
        with open(tmp, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return path


# ----------------------------------------------------------------- worker
def worker(args) -> None:
    """Train and validate one run in this process; write result.json and
    predictions.npz into its work dir."""
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    import train  # noqa: E402  (tools/train.py)

    run, config = args.worker
    out_dir = osp.join(args.work_dir, run)
    run_cfg = write_run_config(config, out_dir, args)
    options = list(args.cfg_options)
    if run == 'bcn':
        options += list(args.bcn_cfg_options)
    argv = [run_cfg, '--work-dir', out_dir]
    if options:
        argv += ['--cfg-options'] + options
    start = time.time()
    runner = train.main(argv)
    wall = time.time() - start
    hub = runner.message_hub.log_scalars
    max_iters = runner.train_loop.max_iters
    interval = runner.train_loop.val_interval
    val_iters = sorted({*range(interval, max_iters + 1, interval), max_iters})
    task = TASKS[args.task]
    history = {}
    for _, key in task['metrics']:
        if f'val/{key}' in hub:
            values = hub[f'val/{key}'].data[0].tolist()
            history[key] = list(zip(val_iters[-len(values):], values))
    loss = hub['train/loss'].data[0].tolist()
    times = hub['train/time'].data[0].tolist()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / 1024
    cpu_minutes = (usage.ru_utime + usage.ru_stime) / 60  # load-independent
    if torch.cuda.is_available():
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    result = dict(
        run=run,
        name=task['runs'][run][0],
        config=config,
        max_iters=max_iters,
        seed=args.seed,
        threads=torch.get_num_threads(),
        metrics={
            key: h[-1][1]
            for key, h in history.items()
        },
        history=history,
        loss=loss,
        train_minutes=sum(times) / 60,
        wall_minutes=wall / 60,
        cpu_minutes=cpu_minutes,
        peak_memory_mib=peak_mib,
        checkpoint=osp.join(out_dir, f'iter_{max_iters}.pth'),
        log_dir=runner.log_dir)
    predictions = predict(runner, args.task)
    with atomic_outputs(osp.join(out_dir, 'predictions.npz'),
                        osp.join(out_dir, 'result.json')) as (npz, res):
        with open(npz, 'wb') as f:  # a file: savez adds no extension
            np.savez_compressed(f, **predictions)
        with open(res, 'w') as f:
            json.dump(result, f)


def predict(runner, task: str):
    """The model's predictions on the first SHOW_IMAGES validation images,
    at their original size, as arrays keyed '<i>_<field>'."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    model = runner.model
    model.eval()
    dataset = runner.val_dataloader.dataset
    out = {}
    with torch.no_grad():
        for i in range(min(SHOW_IMAGES, len(dataset))):
            [sample] = model.test_step(pseudo_collate([dataset[i]]))
            out[f'{i}_path'] = np.array(sample.img_path)
            if task == 'detection':
                pred = sample.pred_instances
                keep = pred.scores >= SCORE_THR
                out[f'{i}_bboxes'] = pred.bboxes[keep].numpy()
                out[f'{i}_labels'] = pred.labels[keep].numpy()
                out[f'{i}_scores'] = pred.scores[keep].numpy()
                out[f'{i}_masks'] = pred.masks[keep].numpy().astype(bool)
            else:
                out[f'{i}_seg'] = sample.pred_sem_seg.data[0].numpy().astype(
                    np.uint8)
                out[f'{i}_seg_path'] = np.array(sample.seg_map_path)
    return out


# ----------------------------------------------------------------- parent
def launch(args, runs, configs=None):
    """Train the runs (concurrently or one after the other) in worker
    processes; return their results. ``configs``: {run: (name, config)}
    in place of the task's."""
    concurrent = not args.sequential and len(runs) > 1
    threads = args.threads or (1 if concurrent else None)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (REPO, env.get('PYTHONPATH')) if p)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
        env['MKL_NUM_THREADS'] = str(threads)
    passed = [
        '--task', args.task, '--work-dir', args.work_dir, '--seed',
        str(args.seed)
    ]
    for flag in ('max_iters', 'val_interval', 'img_size'):
        if getattr(args, flag):
            passed += [f'--{flag.replace("_", "-")}', str(getattr(args, flag))]
    if args.cfg_options:
        passed += ['--cfg-options'] + args.cfg_options
    if args.bcn_cfg_options:
        passed += ['--bcn-cfg-options'] + args.bcn_cfg_options
    procs = {}

    def start(run):
        name, config = (configs or TASKS[args.task]['runs'])[run]
        out_dir = osp.join(args.work_dir, run)
        os.makedirs(out_dir, exist_ok=True)
        log = open(osp.join(out_dir, 'train.log'), 'w')
        cmd = [sys.executable,
               osp.abspath(__file__), '--worker', run, config] + passed
        print(f'[{name}] training, log: {log.name}', flush=True)
        procs[run] = (subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)

    pending = list(runs)
    if concurrent:
        for run in pending:
            start(run)
        pending = []
    else:
        start(pending.pop(0))
    last_report = time.time()
    while procs:
        time.sleep(1)
        for run, (proc, log) in list(procs.items()):
            if proc.poll() is None:
                continue
            log.close()
            del procs[run]
            if proc.returncode != 0:
                for other, _ in procs.values():
                    other.terminate()
                tail = open(log.name).read()[-3000:]
                raise SystemExit(f'{run} run failed ({proc.returncode}); '
                                 f'end of {log.name}:\n{tail}')
            if pending:
                start(pending.pop(0))
        if time.time() - last_report > 60 and procs:
            last_report = time.time()
            print(
                '  ' + ' | '.join(
                    f'{TASKS[args.task]["runs"][r][0]} {progress(log.name)}'
                    for r, (_, log) in procs.items()),
                flush=True)
    results = []
    for run in runs:
        with open(osp.join(args.work_dir, run, 'result.json')) as f:
            results.append(json.load(f))
    return results


def progress(log_path: str) -> str:
    """'iter i/N' from the latest training line of a run's log."""
    try:
        text = open(log_path, errors='replace').read()[-20000:]
    except OSError:
        return ''
    found = re.findall(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]', text)
    return f'iter {found[-1][0]}/{found[-1][1]}' if found else 'starting'


def run_key(row, task: str) -> str:
    """The run ('bcn', 'gn', 'bn') of a results.json row; rows written
    before rows named their run are matched by name."""
    if 'run' in row:
        return row['run']
    return {name: run for run, (name, _) in TASKS[task]['runs'].items()
            }.get(row['name'], row['name'])


def result_row(r, task: str):
    """A run's result.json as its row of results.json."""
    return dict(
        run=r['run'],
        name=r['name'],
        config=r['config'],
        seed=r['seed'],
        iterations=r['max_iters'],
        threads=r['threads'],
        **{key: r['metrics'].get(key)
           for _, key in TASKS[task]['metrics']},
        train_minutes=round(r['train_minutes'], 3),
        total_minutes=round(r['wall_minutes'], 3),
        cpu_minutes=round(r.get('cpu_minutes', float('nan')), 3),
        peak_memory_mib=round(r['peak_memory_mib'], 1),
        checkpoint=r['checkpoint'])


def table_lines(rows, task: str):
    """The results.json rows as the lines of the printed markdown table."""
    metrics = TASKS[task]['metrics']
    head = ['run'] + [m for m, _ in metrics] + [
        'iterations', 'train min', 'total min', 'CPU min', 'peak memory (MiB)'
    ]
    # mmseg reports percentages, mmdet fractions
    metric_format = '{:.2f}' if task == 'segmentation' else '{:.3f}'

    def number(value, form):
        if value is None or value != value:  # absent or NaN
            return '—'
        return form.format(value)

    cells = [[row['name']] +
             [number(row.get(key), metric_format) for _, key in metrics] + [
                 str(row['iterations']),
                 number(row['train_minutes'], '{:.1f}'),
                 number(row['total_minutes'], '{:.1f}'),
                 number(row.get('cpu_minutes'), '{:.1f}'),
                 number(row['peak_memory_mib'], '{:.0f}')
             ] for row in rows]
    return markdown_table(head, cells).split('\n')


def table(results, task: str):
    """The results as markdown table lines and a JSON-able dict."""
    rows = [result_row(r, task) for r in results]
    return table_lines(rows, task), rows


def load_results(work_dir, what='--summarize'):
    """``work_dir``'s results.json, checked to hold what --summarize reads
    (task, seed, runs with their metrics); exits naming the file and the
    key otherwise."""
    path = osp.join(work_dir, 'results.json')
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError) as err:
        raise SystemExit(f'{what}: cannot read {path} ({err}); pass '
                         'the work directory of a finished demo') from err
    task = summary.get('task') if isinstance(summary, dict) else None
    if task not in TASKS or 'seed' not in summary or not isinstance(
            summary.get('runs'), list) or not summary['runs']:
        raise SystemExit(f'{what}: {path} is not the results.json of a '
                         'finished demo (it needs "task", "seed" and a list '
                         'of "runs"); pass the work directory of one')
    keys = [k for _, k in TASKS[task]['metrics']]
    keys += ['train_minutes', 'total_minutes']
    for i, run in enumerate(summary['runs']):
        bad = [k for k in ['name'] + keys if not isinstance(run, dict)
               or k not in run or (k != 'name' and isinstance(run[k], bool))
               or (k != 'name' and not isinstance(run[k], (int, float)))]
        if bad:
            raise SystemExit(f'{what}: {path}: runs[{i}] lacks '
                             f'{", ".join(bad)} (or not as numbers); pass '
                             'the work directory of a finished demo')
    return summary


def summarize(work_dirs):
    """Mean +- sample std of every metric over finished demos (seeds),
    per run, and of the paired differences of each run against GN+WS
    (over the seeds that have both); as markdown lines."""
    import numpy as np
    summaries = [load_results(d) for d in work_dirs]
    tasks = {s['task'] for s in summaries}
    if len(tasks) > 1:
        raise SystemExit(f'--summarize: the demos are of different tasks '
                         f'{sorted(tasks)}; summarize one task at a time')
    task = summaries[0]['task']
    metrics = TASKS[task]['metrics'] + [('train min', 'train_minutes'),
                                        ('total min', 'total_minutes')]
    seeds = [s['seed'] for s in summaries]
    found = {}  # name -> {seed: row}
    for s in summaries:
        for row in s['runs']:
            found.setdefault(row['name'], {})[s['seed']] = row
    order = [TASKS[task]['runs'][r][0] for r in RUNS
             if r in TASKS[task]['runs']]
    names = sorted(found, key=lambda n: (n not in order, order.index(n)
                                         if n in order else 0, n))

    def cell(v, key):
        digits = 1 if key.endswith('minutes') else (
            2 if task == 'segmentation' else 3)
        std = v.std(ddof=1) if len(v) > 1 else float('nan')
        return f'{v.mean():.{digits}f} ± {std:.{digits}f}'

    def label(text, have):
        if sorted(have) == sorted(seeds):
            return text
        return f'{text} (seeds {", ".join(map(str, sorted(have)))})'

    table = []
    for name in names:
        have = sorted(found[name])
        table.append([label(name, have)] + [
            cell(np.array([found[name][s][key] for s in have], dtype=float),
                 key) for _, key in metrics])
    if REFERENCE in found:
        for name in names:
            have = sorted(set(found[name]) & set(found[REFERENCE]))
            if name == REFERENCE or not have:
                continue
            table.append([label(f'{name} − {REFERENCE} (paired)', have)] + [
                cell(np.array([found[name][s][key] - found[REFERENCE][s][key]
                               for s in have], dtype=float), key)
                for _, key in metrics])
    return [f'seeds {seeds}, mean ± std (sample):', ''] + markdown_table(
        ['run'] + [m for m, _ in metrics], table).split('\n')


# ---------------------------------------------------------------- figures
COLOURS = {'bcn': 'tab:red', 'gn': 'tab:blue', 'bn': 'tab:green'}


def plot_curves(results, task: str, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    curves = TASKS[task]['curves']
    fig, axes = plt.subplots(
        1, 1 + len(curves), figsize=(4.6 * (1 + len(curves)), 3.6))
    for r in results:
        colour = COLOURS[r['run']]
        loss = np.asarray(r['loss'], dtype=float)
        steps = np.arange(1, len(loss) + 1)
        window = max(1, min(25, len(loss) // 10))
        smooth = np.convolve(loss, np.ones(window) / window, mode='valid')
        axes[0].plot(steps, loss, color=colour, alpha=0.15, lw=0.6)
        axes[0].plot(steps[window - 1:], smooth, color=colour, label=r['name'])
        for ax, (key, label) in zip(axes[1:], curves):
            points = r['history'].get(key, [])
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, 'o-', color=colour, label=r['name'])
            ax.set_title(f'validation {label}')
            ax.set_xlabel('iteration')
            ax.grid(alpha=0.3)
    axes[0].set_title('training loss' +
                      (f' ({window}-iteration mean)' if window > 1 else ''))
    axes[0].set_xlabel('iteration')
    axes[0].grid(alpha=0.3)
    for ax in axes:
        ax.legend()
    seed = results[0]['seed']
    fig.suptitle(
        f'{task}: same data, model, schedule and seed ({seed}); '
        'only the normalization differs',
        fontsize=10)
    save_figure(fig, path)


def _ground_truth_instances(ann_file: str):
    """img file name -> (labels, masks) from a COCO annotation file."""
    from pycocotools.coco import COCO
    coco = COCO(ann_file)
    out = {}
    for img_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        out[info['file_name']] = [(a['category_id'] - 1, a['bbox'],
                                   coco.annToMask(a).astype(bool))
                                  for a in anns]
    return out


def _draw_instances(ax, img, instances, classes, palette):
    import numpy as np
    from matplotlib.patches import Rectangle
    canvas = img.astype(float)
    for label, _, mask, _ in instances:
        colour = np.array(palette[label], dtype=float)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * colour
    ax.imshow(canvas.astype(np.uint8))
    for label, (x, y, w, h), _, score in instances:
        colour = np.array(palette[label]) / 255
        ax.add_patch(
            Rectangle((x, y), w, h, fill=False, lw=1.3, edgecolor=colour))
        text = classes[label] + ('' if score is None else f' {score:.2f}')
        ax.text(
            x,
            y - 1,
            text,
            fontsize=6,
            color='white',
            va='bottom',
            bbox=dict(facecolor=colour, alpha=0.8, pad=0.6, lw=0))


def plot_predictions(results, args, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    preds = [
        np.load(osp.join(args.work_dir, r['run'], 'predictions.npz'))
        for r in results
    ]
    count = len({k.split('_')[0] for k in preds[0].files})
    cols = 1 + len(results)
    fig, axes = plt.subplots(
        count, cols, figsize=(2.6 * cols, 2.6 * count), squeeze=False)
    if args.task == 'detection':
        from mmbcn.datasets.coco_demo import CLASSES, ShapesCocoDataset
        palette = ShapesCocoDataset.METAINFO['palette']
        from mmengine.config import Config
        cfg = Config.fromfile(
            osp.join(args.work_dir, results[0]['run'], 'demo_config.py'))
        gt = _ground_truth_instances(cfg.val_evaluator.ann_file)
    else:
        from mmbcn.datasets.voc_demo import CLASSES
        from mmbcn.datasets.voc_demo import PALETTE as palette
    for i in range(count):
        img_path = str(preds[0][f'{i}_path'])
        img = np.asarray(Image.open(img_path).convert('RGB'))
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if args.task == 'detection':
                if j == 0:
                    inst = [(lab, box, m, None)
                            for lab, box, m in gt[osp.basename(img_path)]]
                else:
                    p = preds[j - 1]
                    inst = [(int(lab), (b[0], b[1], b[2] - b[0], b[3] - b[1]),
                             m, float(s)) for lab, b, m, s in zip(
                                 p[f'{i}_labels'], p[f'{i}_bboxes'],
                                 p[f'{i}_masks'], p[f'{i}_scores'])]
                _draw_instances(ax, img, inst, CLASSES, palette)
            else:
                if j == 0:
                    seg = np.asarray(
                        Image.open(str(preds[0][f'{i}_seg_path'])))
                else:
                    seg = preds[j - 1][f'{i}_seg']
                colours = np.zeros((256, 3))
                colours[:len(palette)] = palette
                colours[255] = (255, 255, 255)
                blend = 0.4 * img + 0.6 * colours[seg]
                blend[seg == 0] = img[seg == 0]
                ax.imshow(blend.astype(np.uint8))
            if i == 0:
                ax.set_title(
                    'ground truth' if j == 0 else results[j - 1]['name'],
                    fontsize=9)
    what = (f'detections with score >= {SCORE_THR}'
            if args.task == 'detection' else 'predicted classes')
    fig.suptitle(f'validation images: {what}', fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_outputs(path) as (tmp, ):
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


# ------------------------------------------------------------------- main
def prepare_data(task: str, options) -> None:
    """Generate the bundled data once, before the runs start."""
    from mmengine.config import Config, DictAction

    import mmbcn  # noqa: F401
    from mmbcn.engine import prepare_and_check_data
    cfg = Config.fromfile(osp.join(REPO, TASKS[task]['runs']['bcn'][1]))
    cfg.merge_from_dict({
        key: DictAction._parse_iterable(value)
        for key, value in (o.split('=', 1) for o in options)
    })
    prepare_and_check_data(cfg, ['train_dataloader', 'val_dataloader'])


def run_settings(cfg) -> dict:
    """What the rows of one table share: seed, iterations, validation
    points, schedule, batch size, data and pipelines of a run's config."""
    c = cfg.to_dict()
    train = c.get('train_dataloader') or {}
    val = c.get('val_dataloader') or {}
    settings = dict(
        seed=(c.get('randomness') or {}).get('seed'),
        iterations=c['train_cfg'].get('max_iters'),
        val_interval=c['train_cfg'].get('val_interval'),
        schedule=c.get('param_scheduler'),
        batch_size=train.get('batch_size'),
        train_data=train.get('dataset', {}).get('data_root'),
        train_pipeline=train.get('dataset', {}).get('pipeline'),
        val_data=val.get('dataset', {}).get('data_root'),
        val_pipeline=val.get('dataset', {}).get('pipeline'))
    return json.loads(json.dumps(settings, default=repr))


def kept_rows(args, runs, run_config: str):
    """The rows of a finished demo in the work dir that this one keeps
    (those of runs it does not train), after checking that they were
    trained with the settings of ``run_config`` (a new run's config) and
    ``--cfg-options``; exits naming what differs otherwise. (rows,
    results.json) or ([], None) where nothing is kept."""
    from mmengine.config import Config
    if not osp.isfile(osp.join(args.work_dir, 'results.json')):
        return [], None
    summary = load_results(args.work_dir, what='--runs')
    task = summary['task']
    kept = [r for r in summary['runs'] if run_key(r, task) not in runs]
    if not kept:
        return [], None  # every run is trained again: a new table
    problems = []
    if task != args.task:
        problems.append(f'--task {task}')
    if summary['seed'] != args.seed:
        problems.append(f'--seed {summary["seed"]}')
    new = run_settings(merged_config(run_config, args.cfg_options))
    for row in kept if not problems else []:
        run = run_key(row, task)
        dumped = osp.join(args.work_dir, run, 'demo_config.py')
        if not osp.isfile(dumped):
            problems.append(f'{run}: no {dumped} to compare with')
            continue
        old = run_settings(Config.fromfile(dumped))
        problems += [f'{run}: {key} {old.get(key)!r} (now {value!r})'
                     for key, value in new.items() if old.get(key) != value]
    if problems:
        raise SystemExit(
            f'--runs {" ".join(runs)}: {args.work_dir} holds the finished '
            f'runs {", ".join(run_key(r, task) for r in kept)} trained with '
            f'other settings: {"; ".join(problems)}. Add runs with the same '
            '--task, --seed, --max-iters, --val-interval, --img-size and '
            '--cfg-options, train those runs again too, or pass another '
            '--work-dir')
    return kept, summary


def merged_config(path: str, options):
    """The config at ``path`` with the ``K=V`` ``options`` applied."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(path)
    cfg.merge_from_dict({
        key: DictAction._parse_iterable(value)
        for key, value in (o.split('=', 1) for o in options)
    })
    return cfg


def main(argv=None):
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    if args.worker:
        return worker(args)
    if args.summarize:
        lines = summarize(args.summarize)
        print('\n'.join(lines))
        return lines
    os.chdir(REPO)  # the configs' data roots are relative to it
    start = time.time()
    prepare_data(args.task, args.cfg_options)
    runs = [r for r in RUNS if r in args.runs]
    configs = None
    if args.pretrained:  # pretrain (or reuse) the backbones first
        sys.path.insert(0, HERE)
        import demo_pretrain  # noqa: E402  (tools/demo_pretrain.py)
        configs = demo_pretrain.pretrained_detectors(args, runs,
                                                     scaled_schedule)
    first = osp.join(args.work_dir, runs[0])
    os.makedirs(first, exist_ok=True)
    kept, previous = kept_rows(
        args, runs,
        write_run_config((configs or TASKS[args.task]['runs'])[runs[0]][1],
                         first, args))
    concurrent = not args.sequential and len(runs) > 1
    results = launch(args, runs, configs)
    minutes = (time.time() - start) / 60
    _, new_rows = table(results, args.task)
    for row in new_rows:
        row['concurrent'] = concurrent
    rows = sorted(kept + new_rows,
                  key=lambda r: RUNS.index(run_key(r, args.task)))
    lines = table_lines(rows, args.task)
    if previous is None:
        summary = dict(
            task=args.task,
            seed=args.seed,
            concurrent=concurrent,
            total_minutes=round(minutes, 3),
            runs=rows)
    else:  # runs added to a finished demo
        summary = dict(previous, runs=rows)
        summary.setdefault('added', []).append(
            dict(runs=runs, concurrent=concurrent,
                 total_minutes=round(minutes, 3)))
    with atomic_outputs(osp.join(args.work_dir, 'results.md'),
                        osp.join(args.work_dir, 'results.json')) as (md, js):
        with open(md, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(js, 'w') as f:
            json.dump(summary, f, indent=1)
    shown = [r for r in (run_result(args.work_dir, run_key(row, args.task))
                         for row in rows) if r is not None]
    plot_curves(shown, args.task, osp.join(args.work_dir, 'curves.png'))
    plot_predictions(shown, args, osp.join(args.work_dir, 'predictions.png'))
    print(f'\n== mmbcn demo: {args.task}, seed {args.seed}, '
          f'{minutes:.1f} min in all ==')
    print('\n'.join(lines))
    print(f'\ntable:       {osp.join(args.work_dir, "results.md")} (.json)')
    print(f'pictures:    {osp.join(args.work_dir, "curves.png")}, '
          f'{osp.join(args.work_dir, "predictions.png")}')
    for r in results:
        print(f'{r["name"] + ":":12} {r["checkpoint"]}  (logs: '
              f'{r["log_dir"]})')
    return summary


def run_result(work_dir: str, run: str):
    """The result.json of a finished run in ``work_dir``; None if absent
    (a row kept from a demo whose run folder is gone)."""
    path = osp.join(work_dir, run, 'result.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


if __name__ == '__main__':
    main()
