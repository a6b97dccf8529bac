# Copyright (c) mmbcn contributors. All rights reserved.
"""Each run's config: the demo config of the run with what the demo
chooses (iterations, stretched schedule, validation points, seed, image
size), and the settings that the rows of one table must share."""
import json
import math
import os.path as osp

from mmbcn.utils.atomic import atomic_outputs

RUN_CONFIG = 'demo_config.py'  # in each run's folder


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


def parse_options(options) -> dict:
    """``K=V`` strings (as tools/train.py's ``--cfg-options``) as a dict
    for ``Config.merge_from_dict``."""
    from mmengine.config import DictAction
    parsed = {}
    for option in options:
        if '=' not in option:
            raise SystemExit(f'config option {option!r}: not of the form '
                             'KEY=VALUE')
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def merged_config(path: str, options=()):
    """The config at ``path`` with the ``K=V`` ``options`` applied."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(parse_options(options))
    return cfg


def write_run_config(config: str, out_dir: str, args) -> str:
    """A config that inherits ``config`` and sets what the demo chooses
    (``args``: ``max_iters``, ``val_interval``, ``seed``, ``img_size``,
    ``task``); returns its path, ``out_dir``/demo_config.py."""
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
            for t in pipeline:
                if t['type'] == 'Resize':
                    t['scale'] = scale
            lines.append(f'{loader} = dict(dataset=dict(pipeline='
                         f'{pipeline!r}))')
        lines.append('test_dataloader = val_dataloader')
    path = osp.join(out_dir, RUN_CONFIG)
    with atomic_outputs(path) as (tmp, ):
        with open(tmp, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return path


def run_settings(cfg) -> dict:
    """What the rows of one table share: seed, iterations, validation
    points, schedule, batch size, data and pipelines of a run's config;
    as plain JSON data."""
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
        val_images=val.get('dataset', {}).get('indices'),
        val_pipeline=val.get('dataset', {}).get('pipeline'))
    return json.loads(json.dumps(settings, default=repr))


def prepare_data(cfg, loaders=('train_dataloader', 'val_dataloader')):
    """Generate the bundled data of ``cfg``'s ``loaders`` (where their
    dataset type can) and check it, once, before the runs start."""
    from mmbcn.engine.runner_support import prepare_and_check_data
    prepare_and_check_data(cfg, list(loaders))
