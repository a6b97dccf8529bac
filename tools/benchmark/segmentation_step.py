# Copyright (c) mmbcn contributors. All rights reserved.
"""Train-iteration time and peak memory of DeepLabV3 with BCN+WS against
GN+WS, measured in one run.

    python tools/benchmark/segmentation_step.py [--depth 101] [--batch N]
        [--size S] [--iters 6] [--warmup 2] [--device auto|cpu|cuda]
        [--threads T] [--no-memory] [--out-dir DIR] [--system-malloc]

Both models are built from the shipped VOC configs (ImageNet weights off) and
take full training steps (data preprocessor, forward, decode + auxiliary
losses, backward, SGD step) on the same fixed random batch. The variants
alternate step by step (in rotating order), so load from other processes
slows both alike; the median step time is reported.

Peak memory is what one training step adds at its peak above the model and
optimizer state held before it: on CUDA from ``max_memory_allocated``; on
CPU the resident-set peak of one step after the warm-up, each model in its
own process whose allocator returns freed blocks at once (as
``layer_speed.py`` and ``detection_step.py`` measure).

Defaults: on CUDA the paper's per-GPU setting (4 images of 513x513); on CPU
2 images of 129x129, which takes a few minutes on 2 cores. With one process,
SyncBCN computes what BCN computes. On a CPU that other jobs share,
``--threads 1`` gives steadier times than several OpenMP threads. Timings
run with the allocator settings of ``layer_speed.py`` (freed memory kept;
``--system-malloc`` to turn off). Writes ``segmentation_step.json`` and
``.md`` to ``--out-dir`` and prints the table.
"""
import argparse
import json
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData

import mmbcn  # noqa: F401  (registers SyncBCN, WSConv)
from bench_common import (add_output_options, begin, finish, fmt, interleaved,
                          load_average, markdown_table, median_seconds,
                          paired_ratio, peak_memory,
                          reexec_with_timing_allocator, run_memory_worker,
                          synchronize)
from mmbcn.utils import build_model

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'BCN+WS': 'deeplabv3_r101b-d16-mg111_syncbcn-ws_4xb4-30k_'
    'voc12aug-513x513.py',
    'GN+WS': 'deeplabv3_r101b-d16-mg111_gn-ws_4xb4-30k_voc12aug-513x513.py',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--depth', type=int, default=101,
                        choices=(18, 34, 50, 101, 152),
                        help='ResNet depth of the backbone')
    parser.add_argument('--batch', type=int,
                        help='images per step (default: 4 on CUDA, 2 on CPU)')
    parser.add_argument('--size', type=int,
                        help='image side (default: 513 on CUDA, 129 on CPU)')
    parser.add_argument('--iters', type=int, default=6,
                        help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed steps per model first')
    parser.add_argument('--device', default='auto',
                        choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--threads', type=int,
                        help='CPU threads for torch (default: torch\'s)')
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    cuda = args.device == 'cuda'
    args.batch = args.batch or (4 if cuda else 2)
    args.size = args.size or (513 if cuda else 129)
    if args.batch < 2:
        raise SystemExit('--batch must be at least 2: BCN and the ASPP '
                         'image-pool branch take batch statistics')
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit('--iters must be >= 1 and --warmup >= 0')
    return args


def build(name, args):
    """(model, optim_wrapper) for one variant, on ``args.device``; the
    config's default scope (mmseg) only for the build."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'deeplabv3',
                                   CONFIGS[name]))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.depth = args.depth
    if args.depth < 50:  # BasicBlock: 4x fewer output channels
        cfg.model.decode_head.in_channels = 512
        cfg.model.auxiliary_head.in_channels = 256
    cfg.model.data_preprocessor.size = (args.size, args.size)
    model = build_model(cfg).to(args.device)
    model.train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def make_batch(args, num_classes):
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    shape = (args.size, args.size)
    inputs, samples = [], []
    for _ in range(args.batch):
        inputs.append(
            torch.randint(0, 256, (3, ) + shape, generator=gen,
                          dtype=torch.uint8).to(args.device))
        sample = SegDataSample(
            metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, ) + shape, generator=gen).to(args.device))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_all(args, names):
    """The variants ``names``, built in order after one seed, and the
    batch they all train on."""
    torch.manual_seed(0)
    models = {name: build(name, args) for name in names}
    num_classes = next(iter(models.values()))[0].decode_head.num_classes
    return models, make_batch(args, num_classes)


def train_step_fn(model, optim_wrapper, batch):
    def step():
        model.train_step(batch, optim_wrapper)

    return step


def step_peak_memory(model, optim_wrapper, batch, device,
                     warmup: int) -> int:
    """Bytes one training step adds at its peak above what is held
    before it, after ``warmup`` steps."""
    step = train_step_fn(model, optim_wrapper, batch)
    for _ in range(warmup):
        step()
    synchronize(device)
    with peak_memory(device) as peak:
        step()
    return peak['bytes']


def memory_worker(spec: dict) -> None:
    """Run in a fresh process (``--memory-worker``): print the peak of one
    variant as one JSON line."""
    args = parse_args(spec['argv'])
    torch.set_num_threads(spec['threads'])
    models, batch = build_all(args, [spec['variant']])
    model, optim_wrapper = models[spec['variant']]
    peak = step_peak_memory(model, optim_wrapper, batch,
                            torch.device('cpu'), max(args.warmup, 1))
    print(json.dumps(dict(peak=peak)), flush=True)


def main(argv=None) -> dict:
    started = begin(argv, parse_args, memory_worker)
    if started is None:  # a memory worker
        return {}
    argv, args, device, env = started
    models, batch = build_all(args, CONFIGS)
    print(f'device {args.device} ({torch.get_num_threads()} threads), '
          f'DeepLabV3 ResNet-{args.depth}, {args.batch} images of '
          f'{args.size}x{args.size}, {args.warmup} warm-up + {args.iters} '
          'timed steps per model, interleaved', flush=True)
    steps = {name: train_step_fn(model, optim_wrapper, batch)
             for name, (model, optim_wrapper) in models.items()}
    times = interleaved(steps, device, args.iters, 0.0, args.warmup)
    peaks = {name: None for name in models}
    if not args.no_memory:
        for name, (model, optim_wrapper) in models.items():
            if device.type == 'cpu':
                peaks[name] = run_memory_worker(__file__, dict(
                    variant=name, argv=argv,
                    threads=torch.get_num_threads()))[-1]['peak']
            else:
                peaks[name] = step_peak_memory(model, optim_wrapper, batch,
                                               device, 0)  # timed: warm
    env['load_average_after'] = load_average()

    bcn, gn = 'BCN+WS', 'GN+WS'
    median = median_seconds(times)
    results = dict(
        times=times, peaks=peaks, step_s=median,
        step_min_s={name: min(v) for name, v in times.items()},
        peak_mib={name: None if v is None else v / 2**20
                  for name, v in peaks.items()},
        time_ratio=paired_ratio(times[bcn], times[gn]),
        peak_ratio=(peaks[bcn] / peaks[gn] if peaks[bcn] and peaks[gn]
                    else None))
    print(f'{"model":8s} {"s/iter (median)":>16s} {"min":>8s} '
          f'{"peak MiB":>10s}')
    for name in models:
        print(f'{name:8s} {median[name]:16.3f} '
              f'{results["step_min_s"][name]:8.3f} '
              f'{fmt(results["peak_mib"][name], 1):>10s}')
    print(f'BCN+WS / GN+WS: time {fmt(results["time_ratio"])}x, '
          f'peak memory {fmt(results["peak_ratio"])}x')
    rows = [[name, fmt(median[name], 3), fmt(results['step_min_s'][name], 3),
             fmt(results['peak_mib'][name], 1)] for name in models]
    rows.append(['BCN+WS / GN+WS', fmt(results['time_ratio']), '',
                 fmt(results['peak_ratio'])])
    text = '\n'.join([
        f'DeepLabV3 ResNet-{args.depth}, {args.batch} images of '
        f'{args.size}x{args.size}, {device}, float32, {env["threads"]} '
        f'threads, torch {env["torch"]}; time: median over {args.iters} '
        'interleaved steps after '
        f'{args.warmup} warm-up steps; ratio: median of the same-round '
        'ratio.', '',
        markdown_table(['model', 's/iter (median)', 'min s/iter',
                        'peak MiB'], rows),
        f'\n`{env["command"]}`'
    ])
    return finish(args.out_dir, 'segmentation_step', env, results, text)


if __name__ == '__main__':
    reexec_with_timing_allocator()
    main()
