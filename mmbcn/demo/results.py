# Copyright (c) mmbcn contributors. All rights reserved.
"""The demo's table: a row per run in ``results.json`` and
``results.md``, runs added to a finished demo, and the summary of several
finished demos (seeds)."""
import json
import os.path as osp

from mmbcn.utils.markdown import markdown_table
from .run_config import RUN_CONFIG, merged_config, run_settings
from .tasks import REFERENCE, RUNS, TASKS, run_key, run_names

RESULTS = 'results.json'
RUN_RESULT = 'result.json'  # in each run's folder
TIME_KEYS = [('train min', 'train_minutes'), ('total min', 'total_minutes')]


def result_row(r: dict, task: str) -> dict:
    """A run's result.json (written by its worker) as its row of
    results.json."""
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


def _number(value, form: str) -> str:
    if value is None or value != value:  # absent or NaN
        return '—'
    return form.format(value)


def table_lines(rows, task: str) -> list:
    """The results.json rows as the lines of the markdown table."""
    metrics = TASKS[task]['metrics']
    head = ['run'] + [m for m, _ in metrics] + [
        'iterations', 'train min', 'total min', 'CPU min', 'peak memory (MiB)'
    ]
    # mmseg reports percentages, mmdet fractions
    metric = '{:.2f}' if task == 'segmentation' else '{:.3f}'
    cells = [[row['name']] + [_number(row.get(k), metric) for _, k in metrics]
             + [str(row['iterations'])] + [
                 _number(row.get(k), f) for k, f in (
                     ('train_minutes', '{:.1f}'), ('total_minutes', '{:.1f}'),
                     ('cpu_minutes', '{:.1f}'), ('peak_memory_mib', '{:.0f}'))
             ] for row in rows]
    return markdown_table(head, cells).split('\n')


def load_results(work_dir: str, what: str = '--summarize') -> dict:
    """``work_dir``'s results.json, checked to hold what the summary and
    added runs read (task, seed, runs with their metrics); exits naming
    the file and the key otherwise (``what``: the option that reads it)."""
    path = osp.join(work_dir, RESULTS)
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
    keys = [k for _, k in TASKS[task]['metrics'] + TIME_KEYS]
    for i, run in enumerate(summary['runs']):
        bad = [k for k in ['name'] + keys if not isinstance(run, dict)
               or k not in run or (k != 'name' and isinstance(run[k], bool))
               or (k != 'name' and not isinstance(run[k], (int, float)))]
        if bad:
            raise SystemExit(f'{what}: {path}: runs[{i}] lacks '
                             f'{", ".join(bad)} (or not as numbers); pass '
                             'the work directory of a finished demo')
    return summary


def run_result(work_dir: str, run: str):
    """The result.json of a finished run in ``work_dir``; None where
    absent (a row kept from a demo whose run folder is gone)."""
    path = osp.join(work_dir, run, RUN_RESULT)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def kept_rows(args, runs, run_config: str):
    """The rows of a finished demo in ``args.work_dir`` that this one
    keeps (those of the runs it does not train), after checking that they
    were trained with the settings of ``run_config`` (a new run's config)
    and ``args.cfg_options``; exits naming what differs otherwise.
    Returns (rows, results.json), or ([], None) where nothing is kept."""
    from mmengine.config import Config
    if not osp.isfile(osp.join(args.work_dir, RESULTS)):
        return [], None
    summary = load_results(args.work_dir, what='--runs')
    task = summary['task']
    kept = [r for r in summary['runs'] if run_key(r, task) not in runs]
    if not kept:
        return [], None  # every run is trained again: a new table
    problems = []
    if task != args.task:
        problems.append(f'task {task} (now {args.task})')
    if summary['seed'] != args.seed:
        problems.append(f'seed {summary["seed"]} (now {args.seed})')
    new = run_settings(merged_config(run_config, args.cfg_options))
    for row in kept if not problems else []:
        run = run_key(row, task)
        dumped = osp.join(args.work_dir, run, RUN_CONFIG)
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
            '--task, --data, --seed, --max-iters, --val-interval, '
            '--img-size and --cfg-options, train those runs again too, or '
            'pass another --work-dir')
    return kept, summary


def merge_rows(kept, new_rows, task: str) -> list:
    """The kept rows and the new ones, in the order of the table."""
    return sorted(kept + new_rows, key=lambda r: RUNS.index(run_key(r, task)))


def summarize(work_dirs) -> list:
    """Mean +- sample std of every metric over finished demos (seeds), per
    run (over the seeds that have it), and of the paired differences of
    each run against GN+WS (over the seeds that have both); as markdown
    lines."""
    import numpy as np
    summaries = [load_results(d) for d in work_dirs]
    tasks = {s['task'] for s in summaries}
    if len(tasks) > 1:
        raise SystemExit(f'--summarize: the demos are of different tasks '
                         f'{sorted(tasks)}; summarize one task at a time')
    task = summaries[0]['task']
    metrics = TASKS[task]['metrics'] + TIME_KEYS
    seeds = [s['seed'] for s in summaries]
    found = {}  # name -> {seed: row}
    for s in summaries:
        for row in s['runs']:
            found.setdefault(row['name'], {})[s['seed']] = row
    order = run_names(task)
    names = sorted(found, key=lambda n: (n not in order, order.index(n)
                                         if n in order else 0, n))

    def cells(label, have, value):
        if sorted(have) != sorted(seeds):
            label += f' (seeds {", ".join(map(str, sorted(have)))})'
        out = [label]
        for _, key in metrics:
            v = np.array([value(s, key) for s in have], dtype=float)
            digits = 1 if key.endswith('minutes') else (
                2 if task == 'segmentation' else 3)
            std = v.std(ddof=1) if len(v) > 1 else float('nan')
            out.append(f'{v.mean():.{digits}f} ± {std:.{digits}f}')
        return out

    table = [cells(n, sorted(found[n]), lambda s, k, n=n: found[n][s][k])
             for n in names]
    ref = found.get(REFERENCE, {})
    for name in names:
        have = sorted(set(found[name]) & set(ref))
        if name != REFERENCE and have:
            table.append(cells(
                f'{name} − {REFERENCE} (paired)', have,
                lambda s, k, n=name: found[n][s][k] - ref[s][k]))
    return [f'seeds {seeds}, mean ± std (sample):', ''] + markdown_table(
        ['run'] + [m for m, _ in metrics], table).split('\n')
