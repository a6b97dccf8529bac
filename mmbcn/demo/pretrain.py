# Copyright (c) mmbcn contributors. All rights reserved.
"""Pretrained backbones for ``tools/demo.py --pretrained``: each run's
ResNet-18 is pretrained in large batches on the bundled shapes
classification set (``configs/pretrain/``: BCN+WS for the BCN+WS detector,
GN+WS for the GN+WS one), then the detectors are fine-tuned from them
(``configs/mask_rcnn/*_pretrained_demo.py``), the paper's protocol at
small scale: pretrain with batch statistics, fine-tune in micro-batches
with Algorithm 1 starting from the pretrained statistics.

A pretrained backbone is cached under ``--pretrain-cache`` in a folder
named by a key: the SHA-256 of the whole pretraining config as it will run
(model, data pipeline, schedule, seed, ``--pretrain-iters`` and
``--pretrain-cfg-options`` applied) and of the data (the generator's
``meta.json`` and every data file's SHA-256). The folder holds
``pretrained.pth`` (the classifier's weights: ``backbone.*``, ``head.*``),
``key.json`` (the key, what it was computed from, the pretraining's top-1
and time), ``pretrain_config.py`` (the config as run) and the logs. A
backbone is reused only when the key and its material match; anything
changed is trained again, into a new folder. A folder is complete or
absent: training writes into a private folder renamed into place at the
end.
"""
import hashlib
import json
import math
import os
import os.path as osp
import shutil

from .run_config import parse_options, prepare_data, scaled_schedule
from .supervise import Job, ProgressLine, run_jobs
from .tasks import REPO, worker_command
from .worker import write_job

BACKBONES = {
    'bcn': 'configs/pretrain/resnet18_bcn-ws_1xb32_shapes-cls.py',
    'gn': 'configs/pretrain/resnet18_gn-ws_1xb32_shapes-cls.py',
}
DETECTORS = {
    'bcn': ('BCN+WS', 'configs/mask_rcnn/'
            'mask-rcnn_r18_fpn_bcn-ws-all_pretrained_demo.py'),
    'gn': ('GN+WS', 'configs/mask_rcnn/'
           'mask-rcnn_r18_fpn_gn-ws-all_pretrained_demo.py'),
}
CHECKPOINT = 'pretrained.pth'
KEY = 'key.json'
DATA_LOADERS = ('train_dataloader', 'val_dataloader')


# ------------------------------------------------------------ the key
def pretrain_config(config: str, seed: int, iters=None, options=()):
    """The pretraining config as it will run: ``config`` with the seed,
    ``iters`` iterations (the schedule stretched as the demo's runs'; a
    phase that starts after the end of a shorter run starts at its last
    iteration; cosine periods follow) and the ``K=V`` ``options``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    old_max = cfg.train_cfg.max_iters
    new_max = iters or old_max
    if new_max != old_max:
        schedulers = scaled_schedule(cfg.param_scheduler, old_max, new_max)
        for s in schedulers:
            s['begin'] = min(s.get('begin', 0), s['end'] - 1)
            if 'T_max' in s:
                s['T_max'] = s['end'] - s['begin']
        cfg.param_scheduler = schedulers
        cfg.train_cfg.max_iters = new_max
        cfg.train_cfg.val_interval = max(1, math.ceil(new_max / 4))
        cfg.default_hooks.checkpoint.interval = new_max
    cfg.randomness = dict(seed=seed)
    cfg.merge_from_dict(parse_options(options))
    return cfg


def data_fingerprint(data_root: str) -> dict:
    """{file: SHA-256} of every file under ``data_root`` (its generator's
    ``meta.json`` included)."""
    found = {}
    for folder, _, files in sorted(os.walk(data_root)):
        for name in sorted(files):
            path = osp.join(folder, name)
            digest = hashlib.sha256()
            with open(path, 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    digest.update(block)
            found[osp.relpath(path, data_root)] = digest.hexdigest()
    return found


def cache_key(cfg):
    """(SHA-256 hex digest, material): what a cached backbone must have
    been trained from to be reused. The data must exist
    (``prepare_data``)."""
    config = cfg.to_dict()
    for volatile in ('work_dir', 'launcher'):
        config.pop(volatile, None)
    data = {
        loader: data_fingerprint(cfg[loader].dataset.data_root)
        for loader in DATA_LOADERS
    }
    text = json.dumps(dict(config=config, data=data), sort_keys=True,
                      default=repr)
    return hashlib.sha256(text.encode()).hexdigest(), json.loads(text)


def cached(entry: str, digest: str, material: dict):
    """The ``key.json`` of the backbone cached in ``entry`` if it was
    trained from exactly ``material``; else None."""
    try:
        with open(osp.join(entry, KEY)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if (saved.get('digest') != digest or saved.get('material') != material
            or not osp.isfile(osp.join(entry, CHECKPOINT))):
        return None
    return saved


def entry_dir(cache: str, config: str, digest: str) -> str:
    return osp.join(cache, osp.splitext(osp.basename(config))[0],
                    digest[:16])


# ------------------------------------------------------------- training
def _finish(part: str, digest: str, material: dict) -> dict:
    """Keep the model weights of the finished run in ``part`` as
    ``pretrained.pth``, drop the training checkpoint, write ``key.json``
    (last: it marks the folder complete); return it."""
    import torch

    from mmbcn.engine import load_weights_only
    with open(osp.join(part, 'result.json')) as f:
        result = json.load(f)
    state = load_weights_only(result.pop('checkpoint'))['state_dict']
    torch.save(dict(state_dict=state, meta=dict(digest=digest)),
               osp.join(part, CHECKPOINT))
    for name in os.listdir(part):
        if name.endswith('.pth') and name != CHECKPOINT or (
                name == 'last_checkpoint'):
            os.unlink(osp.join(part, name))
    saved = dict(digest=digest, material=material, result=result)
    with open(osp.join(part, KEY), 'w') as f:
        json.dump(saved, f)
    return saved


def _place(part: str, entry: str, digest: str, material: dict) -> None:
    """Rename the finished ``part`` to ``entry``; a complete entry written
    meanwhile by another process is kept, a stale one replaced."""
    if osp.isdir(entry) and cached(entry, digest, material) is None:
        shutil.rmtree(entry)
    os.makedirs(osp.dirname(entry), exist_ok=True)
    try:
        os.rename(part, entry)
    except OSError:
        if cached(entry, digest, material) is None:
            raise
        shutil.rmtree(part, ignore_errors=True)


def train_backbones(jobs, threads=None):
    """Train ``jobs`` ({run: (cfg, digest, material, entry)}) at once in
    worker processes (one thread each when several, else ``threads``);
    return {run: key.json}."""
    workers, parts = [], {}
    for run, (cfg, digest, material, entry) in jobs.items():
        part = f'{entry}.part-{os.getpid()}'
        shutil.rmtree(part, ignore_errors=True)
        os.makedirs(part)
        config = osp.join(part, 'pretrain_config.py')
        cfg.dump(config)
        job = write_job(osp.join(part, 'job.json'), kind='pretrain',
                        config=config, out_dir=part)
        workers.append(Job(run, worker_command(job),
                           osp.join(part, 'train.log')))
        parts[run] = part
    done = {}

    def finish(job):
        _, digest, material, entry = jobs[job.name]
        done[job.name] = _finish(parts[job.name], digest, material)
        _place(parts[job.name], entry, digest, material)

    concurrent = len(jobs) > 1
    run_jobs(workers, REPO, concurrent, 1 if concurrent else threads,
             what='pretraining', on_done=finish, progress=ProgressLine())
    return done


# ------------------------------------------------------------------ demo
def pretrained_detectors(args, runs):
    """Pretrain (or reuse) the backbone of each of ``runs``, then write the
    detection config of each run, which loads it; return {run: (name,
    config)} in place of the task's runs, and write
    ``<work dir>/pretrained.json``."""
    jobs, infos = {}, {}
    for run in runs:
        config = osp.join(REPO, BACKBONES[run])
        cfg = pretrain_config(config, args.pretrain_seed, args.pretrain_iters,
                              args.pretrain_cfg_options)
        prepare_data(cfg, DATA_LOADERS)
        digest, material = cache_key(cfg)
        entry = entry_dir(args.pretrain_cache, config, digest)
        saved = cached(entry, digest, material)
        if saved is None:
            jobs[run] = (cfg, digest, material, entry)
        else:
            print(f'[{run}] reusing the pretrained backbone {entry} '
                  f'(key {digest[:16]})', flush=True)
            infos[run] = dict(saved, reused=True)
    for run, saved in train_backbones(jobs, args.threads).items():
        infos[run] = dict(saved, reused=False)
    configs, summary = {}, {}
    for run in runs:
        entry = entry_dir(args.pretrain_cache, BACKBONES[run],
                          infos[run]['digest'])
        checkpoint = osp.join(entry, CHECKPOINT)
        name, detector = DETECTORS[run]
        out_dir = osp.join(args.work_dir, run)
        os.makedirs(out_dir, exist_ok=True)
        path = osp.join(out_dir, 'pretrained_init.py')
        with open(path, 'w') as f:
            f.write('# Written by tools/demo.py --pretrained: the detector '
                    'starts from this pretrained backbone.\n'
                    f'_base_ = {osp.join(REPO, detector)!r}\n'
                    'model = dict(backbone=dict(init_cfg=dict('
                    f'checkpoint={checkpoint!r})))\n')
        configs[run] = (name, path)
        result = infos[run]['result']
        summary[run] = dict(
            name=name, config=BACKBONES[run], checkpoint=checkpoint,
            key=infos[run]['digest'], reused=infos[run]['reused'],
            top1=result['top1'], iterations=result['iterations'],
            cpu_minutes=result['cpu_minutes'])
    with open(osp.join(args.work_dir, 'pretrained.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    for info in summary.values():
        top1 = '—' if info['top1'] is None else f'{info["top1"]:.1f} %'
        print(f'pretrained {info["name"]} backbone: top-1 {top1} after '
              f'{info["iterations"]} iterations '
              f'({info["cpu_minutes"]:.1f} CPU min'
              f'{", cached" if info["reused"] else ""}): '
              f'{info["checkpoint"]}', flush=True)
    return configs
