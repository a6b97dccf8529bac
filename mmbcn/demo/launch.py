# Copyright (c) mmbcn contributors. All rights reserved.
"""The whole demo from its parsed command line (``tools/demo.py``): the
data prepared once, the runs trained in worker processes, the table
written (or extended, for runs added to a finished demo), the pictures
drawn, and a report printed."""
import json
import os
import os.path as osp
import time

from mmbcn.utils.atomic import atomic_outputs
from .plots import plot_curves, plot_predictions
from .results import (RESULTS, kept_rows, merge_rows, result_row, run_result,
                      table_lines)
from .run_config import merged_config, prepare_data, write_run_config
from .supervise import Job, run_jobs
from .tasks import REPO, RUNS, TASKS, run_key, worker_command
from .worker import write_job


def launch(args, runs, configs=None) -> list:
    """Train ``runs`` (concurrently, one thread each, or one after the
    other) in worker processes; return their result.json. ``configs``:
    {run: (name, config)} in place of the task's."""
    concurrent = not args.sequential and len(runs) > 1
    jobs = []
    for run in runs:
        name, config = (configs or TASKS[args.task]['runs'])[run]
        out_dir = osp.join(args.work_dir, run)
        os.makedirs(out_dir, exist_ok=True)
        options = list(args.cfg_options)
        if run == 'bcn':
            options += list(args.bcn_cfg_options)
        job = write_job(
            osp.join(out_dir, 'job.json'), kind='run', task=args.task,
            run=run, name=name, config=config, out_dir=out_dir,
            seed=args.seed, max_iters=args.max_iters,
            val_interval=args.val_interval, img_size=args.img_size,
            options=options)
        jobs.append(Job(name, worker_command(job),
                        osp.join(out_dir, 'train.log')))
    run_jobs(jobs, REPO, concurrent,
             args.threads or (1 if concurrent else None))
    return [run_result(args.work_dir, run) for run in runs]


def run_demo(args) -> dict:
    """Train the runs of ``args`` (tools/demo.py's parsed command line,
    ``work_dir`` absolute, run from the repository root), write the table
    and the pictures, print the report; return results.json."""
    start = time.time()
    runs = [r for r in RUNS if r in args.runs]
    prepare_data(merged_config(TASKS[args.task]['runs'][runs[0]][1],
                               args.cfg_options))
    configs = None
    if args.pretrained:  # pretrain (or reuse) the backbones first
        from .pretrain import pretrained_detectors
        configs = pretrained_detectors(args, runs)
    first = osp.join(args.work_dir, runs[0])
    os.makedirs(first, exist_ok=True)
    kept, previous = kept_rows(args, runs, write_run_config(
        (configs or TASKS[args.task]['runs'])[runs[0]][1], first, args))
    concurrent = not args.sequential and len(runs) > 1
    results = launch(args, runs, configs)
    minutes = (time.time() - start) / 60
    new_rows = [dict(result_row(r, args.task), concurrent=concurrent)
                for r in results]
    rows = merge_rows(kept, new_rows, args.task)
    lines = table_lines(rows, args.task)
    if previous is None:
        summary = dict(task=args.task, seed=args.seed, concurrent=concurrent,
                       total_minutes=round(minutes, 3), runs=rows)
        if args.task == 'detection':
            summary['data'] = args.data
    else:  # runs added to a finished demo
        summary = dict(previous, runs=rows)
        summary['added'] = summary.get('added', []) + [
            dict(runs=runs, concurrent=concurrent,
                 total_minutes=round(minutes, 3))]
    write_table(args.work_dir, lines, summary)
    shown = [r for r in (run_result(args.work_dir, run_key(row, args.task))
                         for row in rows) if r is not None]
    curves = osp.join(args.work_dir, 'curves.png')
    pictures = osp.join(args.work_dir, 'predictions.png')
    plot_curves(shown, args.task, curves)
    plot_predictions(shown, args.task, args.work_dir, pictures)
    data = f' on {args.data}' if args.task == 'detection' else ''
    print(f'\n== mmbcn demo: {args.task}{data}, seed {args.seed}, '
          f'{minutes:.1f} min in all ==')
    print('\n'.join(lines))
    print(f'\ntable:       {osp.join(args.work_dir, "results.md")} (.json)')
    print(f'pictures:    {curves}, {pictures}')
    for r in results:
        print(f'{r["name"] + ":":12} {r["checkpoint"]}  (logs: '
              f'{r["log_dir"]})')
    return summary


def write_table(work_dir: str, lines, summary: dict) -> None:
    """results.md (the markdown ``lines``) and results.json (``summary``),
    both or neither."""
    with atomic_outputs(osp.join(work_dir, 'results.md'),
                        osp.join(work_dir, RESULTS)) as (md, js):
        with open(md, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(js, 'w') as f:
            json.dump(summary, f, indent=1)
