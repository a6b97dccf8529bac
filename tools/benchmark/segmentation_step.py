# Copyright (c) mmbcn contributors. All rights reserved.
"""Train-iteration time and peak memory of DeepLabV3 with BCN+WS against
GN+WS, measured in one run.

    python tools/benchmark/segmentation_step.py [--depth 101] [--batch N]
        [--size S] [--iters 6] [--warmup 2] [--device auto|cpu|cuda]
        [--threads T]

Both models are built from the shipped VOC configs (ImageNet weights off) and
take full training steps (data preprocessor, forward, decode + auxiliary
losses, backward, SGD step) on the same fixed random batch. The variants
alternate step by step, so load from other processes slows both alike; the
median step time is reported.

Peak memory is what one training step allocates above the model and
optimizer state held before it: on CUDA ``torch.cuda.max_memory_allocated``,
on CPU the highest total of tensor memory the profiler's allocation events
record during one step.

Defaults: on CUDA the paper's per-GPU setting (4 images of 513x513); on CPU
2 images of 129x129, which takes a few minutes on 2 cores. With one process,
SyncBCN computes what BCN computes. On a CPU that other jobs share,
``--threads 1`` gives steadier times than several OpenMP threads.
"""
import argparse
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmbcn  # noqa: F401  (registers SyncBCN, WSConv)

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
    """(model, optim_wrapper) for one variant, on ``args.device``."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'deeplabv3',
                                   CONFIGS[name]))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.depth = args.depth
    if args.depth < 50:  # BasicBlock: 4x fewer output channels
        cfg.model.decode_head.in_channels = 512
        cfg.model.auxiliary_head.in_channels = 256
    cfg.model.data_preprocessor.size = (args.size, args.size)
    model = MODELS.build(cfg.model).to(args.device)
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


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def timed_step(model, optim_wrapper, batch, device) -> float:
    sync(device)
    start = time.perf_counter()
    model.train_step(batch, optim_wrapper)
    sync(device)
    return time.perf_counter() - start


def _allocations(nodes):
    from torch._C._profiler import _EventType
    for node in nodes:
        if node.tag == _EventType.Allocation:
            yield node.extra_fields.total_allocated
        yield from _allocations(node.children)


def step_peak_memory(model, optim_wrapper, batch, device) -> int:
    """Bytes one training step allocates at its peak above what is held
    before it."""
    if device == 'cuda':
        sync(device)
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model.train_step(batch, optim_wrapper)
        sync(device)
        return torch.cuda.max_memory_allocated() - held
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        model.train_step(batch, optim_wrapper)
    # The CPU allocator's running total counts the tensors created since
    # profiling began, so its maximum is the step's peak.
    totals = list(
        _allocations(prof.profiler.kineto_results.experimental_event_tree()))
    return max(totals, default=0)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    models = {name: build(name, args) for name in CONFIGS}
    num_classes = next(iter(models.values()))[0].decode_head.num_classes
    batch = make_batch(args, num_classes)
    print(f'device {args.device} ({torch.get_num_threads()} threads), '
          f'DeepLabV3 ResNet-{args.depth}, {args.batch} images of '
          f'{args.size}x{args.size}, {args.warmup} warm-up + {args.iters} '
          'timed steps per model, interleaved')
    times = {name: [] for name in models}
    for i in range(args.warmup + args.iters):
        for name, (model, optim_wrapper) in models.items():
            seconds = timed_step(model, optim_wrapper, batch, args.device)
            if i >= args.warmup:
                times[name].append(seconds)
    peaks = {
        name: step_peak_memory(model, optim_wrapper, batch, args.device)
        for name, (model, optim_wrapper) in models.items()
    }
    print(f'{"model":8s} {"s/iter (median)":>16s} {"min":>8s} '
          f'{"peak MiB":>10s}')
    for name in models:
        print(f'{name:8s} {statistics.median(times[name]):16.3f} '
              f'{min(times[name]):8.3f} {peaks[name] / 2**20:10.1f}')
    bcn, gn = 'BCN+WS', 'GN+WS'
    time_ratio = statistics.median(times[bcn]) / statistics.median(times[gn])
    print(f'BCN+WS / GN+WS: time {time_ratio:.2f}x, '
          f'peak memory {peaks[bcn] / peaks[gn]:.2f}x')
    return dict(times=times, peaks=peaks)


if __name__ == '__main__':
    main()
