# Copyright (c) mmbcn contributors. All rights reserved.
"""What a demo worker process does: train one config with
``tools/train.py``'s ``main`` (passed in), then write what the demo reads
from the finished run: ``result.json`` (metrics and their history, loss,
time, memory) and, for a demo run, ``predictions.npz`` (the model on the
first validation images).

A job is a JSON file: ``kind`` 'run' (a demo run: ``task``, ``run``,
``name``, ``config``, ``out_dir``, ``seed``, ``max_iters``,
``val_interval``, ``img_size``, ``options``) or 'pretrain' (``config``,
``out_dir``)."""
import json
import os.path as osp
import resource
import time
from types import SimpleNamespace

from mmbcn.utils.atomic import atomic_outputs
from .run_config import write_run_config
from .tasks import TASKS

SHOW_IMAGES = 4  # validation images in predictions.png (the first ones)
SCORE_THR = 0.3  # detections kept for predictions.png


def write_job(path: str, **job) -> str:
    with open(path, 'w') as f:
        json.dump(job, f, indent=1)
    return path


def run_job(path: str, train_main) -> None:
    """Run the job in the JSON file ``path`` with ``train_main`` (called
    as tools/train.py's ``main(argv)``, returning the Runner)."""
    with open(path) as f:
        job = json.load(f)
    if job['kind'] == 'pretrain':
        return pretrain(job, train_main)
    return demo_run(job, train_main)


def usage() -> dict:
    """This process's CPU minutes (load-independent) and peak memory."""
    import torch
    used = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = used.ru_maxrss / 1024
    if torch.cuda.is_available():
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    return dict(cpu_minutes=(used.ru_utime + used.ru_stime) / 60,
                peak_memory_mib=peak_mib)


def demo_run(job: dict, train_main) -> None:
    """Train and validate one demo run; write result.json and
    predictions.npz into its folder."""
    import numpy as np
    import torch
    out_dir = job['out_dir']
    run_cfg = write_run_config(job['config'], out_dir,
                               SimpleNamespace(**job))
    argv = [run_cfg, '--work-dir', out_dir]
    if job['options']:
        argv += ['--cfg-options'] + job['options']
    start = time.time()
    runner = train_main(argv)
    wall = time.time() - start
    hub = runner.message_hub.log_scalars
    max_iters = runner.train_loop.max_iters
    interval = runner.train_loop.val_interval
    val_iters = sorted({*range(interval, max_iters + 1, interval), max_iters})
    history = {}
    for _, key in TASKS[job['task']]['metrics']:
        if f'val/{key}' in hub:
            values = hub[f'val/{key}'].data[0].tolist()
            history[key] = list(zip(val_iters[-len(values):], values))
    result = dict(
        run=job['run'],
        name=job['name'],
        config=job['config'],
        max_iters=max_iters,
        seed=job['seed'],
        threads=torch.get_num_threads(),
        metrics={key: h[-1][1] for key, h in history.items()},
        history=history,
        loss=hub['train/loss'].data[0].tolist(),
        train_minutes=sum(hub['train/time'].data[0].tolist()) / 60,
        wall_minutes=wall / 60,
        **usage(),
        checkpoint=osp.join(out_dir, f'iter_{max_iters}.pth'),
        log_dir=runner.log_dir)
    predictions = predict(runner, job['task'])
    with atomic_outputs(osp.join(out_dir, 'predictions.npz'),
                        osp.join(out_dir, 'result.json')) as (npz, res):
        with open(npz, 'wb') as f:  # a file: savez adds no extension
            np.savez_compressed(f, **predictions)
        with open(res, 'w') as f:
            json.dump(result, f)


def predict(runner, task: str) -> dict:
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


def pretrain(job: dict, train_main) -> None:
    """Train a pretraining config into ``out_dir``; write result.json
    (top-1 history, loss, time, the checkpoint)."""
    out_dir = job['out_dir']
    start = time.time()
    runner = train_main([job['config'], '--work-dir', out_dir])
    hub = runner.message_hub.log_scalars
    top1 = (hub['val/accuracy/top1'].data[0].tolist()
            if 'val/accuracy/top1' in hub else [])
    with open(osp.join(out_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    result = dict(
        top1=top1[-1] if top1 else None,
        top1_history=top1,
        loss=hub['train/loss'].data[0].tolist(),
        iterations=runner.train_loop.max_iters,
        wall_minutes=(time.time() - start) / 60,
        cpu_minutes=usage()['cpu_minutes'],
        checkpoint=checkpoint)
    with open(osp.join(out_dir, 'result.json'), 'w') as f:
        json.dump(result, f)
