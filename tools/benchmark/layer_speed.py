# Copyright (c) mmbcn contributors. All rights reserved.
"""BCN's cost at the layer level, against nn.GroupNorm measured in the same
run.

    python tools/benchmark/layer_speed.py [--batch 1 16] [--image-size 224 [W]]
        [--stages 1 2 3 4] [--dtype float32 [bfloat16 ...]] [--repeat 7]
        [--min-time 0.05] [--threads N] [--device cpu|cuda] [--compile]
        [--no-memory] [--out-dir DIR]

Needs torch alone (and Triton for its backend): it runs on a GPU machine
without OpenMMLab. For the output shapes of ResNet-50's four stages
(C x H/s x W/s for an ``--image-size`` H [W] input; 224: ImageNet,
``800 1344``: a COCO image as the paper's detectors see it), each batch
size and each ``--dtype``, in training mode:

* ``GN`` nn.GroupNorm(32, C), ``BN`` nn.BatchNorm2d(C);
* ``BCN`` / ``BCN-est``: mmbcn's BCN, large-batch / micro-batch
  (Algorithm 1, ``estimate=True``), on the backend ``auto`` picks;
* ``BCN-<backend>`` / ``BCN-est-<backend>``: the same forced onto each
  backend that serves the device (``py``: the Python reference; ``cpu``:
  the native CPU kernel; ``triton``);
* ``composed`` / ``composed-est``: BCN composed as the paper writes it
  (Eq. 16): BatchNorm2d (or the batch step with Algorithm 1's estimates),
  then group normalization and the per-group affine;
* with ``--compile``, ``GN+compile``, ``BCN+compile`` and
  ``BCN-est+compile``: the same layers under ``torch.compile`` (inductor),
  after a warm-up that compiles them; the summary gives compiled BCN
  against compiled GN as well as against eager GN.

Columns: forward (training mode, graph recorded), forward+backward
(gradients of input and parameters), inference (eval mode, no graph), in
ms; ``GB/s``: the forward+backward's minimal traffic (x and y forward; x,
dy and dx backward: five tensors of x's size) over its time, and its
fraction of the device-to-device copy bandwidth measured in the same run;
ratios to GN from the same round, median over ``--repeat`` rounds in
which the variants run interleaved, in rotating order, after a warm-up;
``saved``: bytes autograd keeps for the backward pass (tensors packed by
``saved_tensors_hooks``, counted once per storage, the input included);
``peak``: memory the forward+backward adds at its peak (CPU: resident set
of a separate process whose allocator returns freed blocks at once; CUDA:
``max_memory_allocated``).

On Linux the command re-runs itself with glibc's allocator keeping freed
memory (``TIMING_MALLOC_ENV``), as PyTorch's caching allocators do on GPU:
otherwise every full-size output is a fresh ``mmap`` whose page faults,
which depend on what ran before, swing the timings of both BCN and GN by
up to 2x. ``--system-malloc`` keeps the default allocator.

Writes ``layer_speed.json`` and ``layer_speed.md`` to ``--out-dir`` and
prints the table. Timings on a shared machine are noisy: the JSON records
the threads, the load average and the command.
"""
import argparse
import json
import math
import statistics
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_common import (add_output_options, begin, fmt, interleaved,
                          load_average, markdown_table, paired_ratio,
                          peak_memory, reexec_with_timing_allocator,
                          run_memory_worker, saved_bytes_counter,
                          write_outputs)
from mmbcn.ops import BACKENDS, BatchChannelNorm, set_backend
from mmbcn.ops.backends import names as backend_names

GROUPS = 32
UPDATE_RATE = 0.01
# ResNet-50 stage outputs at a 224 x 224 input: channels and stride.
RESNET50_STAGES = {1: (256, 4), 2: (512, 8), 3: (1024, 16), 4: (2048, 32)}


class ComposedBCN(nn.Module):
    """BCN as Eq. 16 writes it, ``CN(BN(X))``: a BatchNorm2d (or, with
    ``estimate``, the batch step with Algorithm 1's estimates, lines 1-5 as
    written), then group normalization of each sample's G channel groups
    with a per-group affine (Eq. 15). The baseline the fused BCN replaces.
    """

    def __init__(self, channels: int, groups: int = GROUPS,
                 estimate: bool = False, update_rate: float = UPDATE_RATE):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.groups = groups
        self.estimate = estimate
        self.update_rate = update_rate
        self.weight = nn.Parameter(torch.ones(1, groups, 1))
        self.bias = nn.Parameter(torch.zeros(1, groups, 1))

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        if self.estimate and self.training:
            with torch.no_grad():
                dims = (0, 2, 3)
                mean = x.mean(dims)  # line 1
                old = bn.running_mean.view(1, -1, 1, 1)
                var = (x - old).pow(2).mean(dims)  # line 2
                bn.running_mean.add_(self.update_rate *
                                     (mean - bn.running_mean))  # line 3
                bn.running_var.add_(self.update_rate *
                                    (var - bn.running_var))  # line 4
        if self.estimate:  # line 5, with the updated estimates
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                             bn.bias, False, 0.0, bn.eps)
        else:
            x = bn(x)
        y = F.group_norm(x, self.groups, eps=bn.eps)
        y = torch.addcmul(self.bias, y.view(y.shape[0], self.groups, -1),
                          self.weight)
        return y.view_as(x)


class BackendBCN(BatchChannelNorm):
    """mmbcn's BCN forced onto one backend during its calls."""

    def __init__(self, *args, backend: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        previous = set_backend(self.backend)
        try:
            return super().forward(x)
        finally:
            set_backend(previous)


# every backend of the table, by a short name in the variants' names
SHORT = {name: 'py' if name == 'python' else name for name in backend_names()}
VARIANTS: Dict[str, Callable[[int], nn.Module]] = {
    'GN': lambda c: nn.GroupNorm(GROUPS, c),
    'BN': lambda c: nn.BatchNorm2d(c),
    'BCN': lambda c: BatchChannelNorm(c, GROUPS),
    'BCN-est': lambda c: BatchChannelNorm(
        c, GROUPS, estimate=True, update_rate=UPDATE_RATE),
    'composed': lambda c: ComposedBCN(c),
    'composed-est': lambda c: ComposedBCN(c, estimate=True),
}
for _name, _short in SHORT.items():
    VARIANTS[f'BCN-{_short}'] = (
        lambda c, b=_name: BackendBCN(c, GROUPS, backend=b))
    VARIANTS[f'BCN-est-{_short}'] = (lambda c, b=_name: BackendBCN(
        c, GROUPS, estimate=True, update_rate=UPDATE_RATE, backend=b))


COMPILED = '+compile'
for _name in ('GN', 'BCN', 'BCN-est'):
    VARIANTS[_name + COMPILED] = (
        lambda c, make=VARIANTS[_name]: torch.compile(make(c)))


def default_variants(device: torch.device) -> List[str]:
    """GN, BN, BCN as ``auto`` runs it, BCN on each backend that serves
    ``device`` here, and the paper's composition."""
    names = ['GN', 'BN', 'BCN', 'BCN-est']
    for name, short in SHORT.items():
        backend = BACKENDS[name]
        if name == 'triton' and device.type == 'cpu':
            continue  # Triton's interpreter: for tests, not for timing
        if device.type in backend.devices and backend.refusal(
                _probe(device)) is None:
            names += [f'BCN-{short}', f'BCN-est-{short}']
    return names + ['composed', 'composed-est']


def _probe(device: torch.device):
    from mmbcn.ops.call import BCNCall
    x = torch.ones(2, GROUPS, 2, 2, device=device)
    one = torch.ones(GROUPS, device=device)
    return BCNCall(x, one * 0, one, torch.zeros((), dtype=torch.long,
                                                device=device), one,
                   one * 0, one, one * 0, GROUPS, 'batch',
                   torch.tensor(0.1, dtype=torch.float64), 1e-5)


BASELINE = 'GN'


# ------------------------------------------------------------ the layers

def make_case(variant: str, shape: Sequence[int], device: torch.device,
              seed: int = 0, dtype: torch.dtype = torch.float32):
    """(module, x, dy, inputs to differentiate) for one variant/shape."""
    gen = torch.Generator().manual_seed(seed)
    module = VARIANTS[variant](shape[1]).to(device, dtype).train()
    x = torch.randn(*shape, generator=gen).to(device,
                                              dtype).requires_grad_()
    dy = torch.randn(*shape, generator=gen).to(device, dtype)
    return module, x, dy, [x] + list(module.parameters())


def copy_bandwidth(device: torch.device, dtype: torch.dtype,
                   repeat: int, nbytes: int = 256 * 2**20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write) of a
    ``nbytes`` tensor, the best of ``repeat`` rounds."""
    src = torch.ones(nbytes // torch.finfo(dtype).bits * 8, dtype=dtype,
                     device=device)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    times = interleaved({'copy': fn}, device, max(1, repeat), 0.05)['copy']
    return 2 * nbytes / min(times)


def layer_ops(variant: str, shape: Sequence[int], device: torch.device,
              dtype: torch.dtype = torch.float32):
    module, x, dy, inputs = make_case(variant, shape, device, dtype=dtype)

    def forward():
        module(x)

    def forward_backward():
        torch.autograd.grad(module(x), inputs, dy)

    def inference():
        module.eval()
        with torch.no_grad():
            module(x)
        module.train()

    return dict(fwd=forward, fwd_bwd=forward_backward, infer=inference)


def saved_for_backward(variant: str, shape: Sequence[int],
                       device: torch.device,
                       dtype: torch.dtype = torch.float32) -> int:
    module, x, _, _ = make_case(variant, shape, device, dtype=dtype)
    with saved_bytes_counter() as saved:
        module(x)
    return saved['bytes']


def peak_forward_backward(variant: str, shape: Sequence[int],
                          device: torch.device,
                          dtype: torch.dtype = torch.float32
                          ) -> Optional[int]:
    module, x, dy, inputs = make_case(variant, shape, device, dtype=dtype)
    torch.autograd.grad(module(x), inputs, dy)  # warm-up
    with peak_memory(device) as peak:
        grads = torch.autograd.grad(module(x), inputs, dy)
        del grads
    return peak['bytes']


def memory_worker(spec: dict) -> None:
    """Run in a fresh process (``--memory-worker``): print one JSON line
    of peak bytes per (variant, shape)."""
    torch.set_num_threads(spec['threads'])
    device = torch.device('cpu')
    for variant, shape in spec['cases']:
        print(json.dumps(dict(variant=variant, shape=shape,
                              peak=peak_forward_backward(
                                  variant, shape, device))), flush=True)


def peaks_in_subprocess(cases: List, threads: int) -> Dict:
    """CPU peaks measured in one child process with ``MALLOC_ENV``, so
    that freed blocks leave the resident set at once."""
    items = run_memory_worker(__file__, dict(cases=cases, threads=threads))
    return {(item['variant'], tuple(item['shape'])): item['peak']
            for item in items}


# ------------------------------------------------------------------ main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 16])
    parser.add_argument('--stages', type=int, nargs='+',
                        default=[1, 2, 3, 4], choices=[1, 2, 3, 4],
                        help='ResNet-50 stages whose output shapes to use')
    parser.add_argument('--image-size', type=int, nargs='+', default=[224],
                        help='input H [W] whose stage shapes to use')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS),
                        help='default: those that run on --device here')
    parser.add_argument('--dtype', nargs='+', default=['float32'],
                        choices=['float32', 'bfloat16', 'float16',
                                 'float64'])
    parser.add_argument('--repeat', type=int, default=7,
                        help='interleaved rounds (the median is reported)')
    parser.add_argument('--min-time', type=float, default=0.05,
                        help='seconds per measurement (loops added)')
    parser.add_argument('--threads', type=int,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--compile', action='store_true',
                        help='add GN, BCN and BCN-est under torch.compile')
    add_output_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    started = begin(argv, parse_args, memory_worker)
    if started is None:  # a memory worker
        return {}
    _, args, device, env = started
    variants = args.variants or default_variants(device)
    if args.compile:
        variants += [v + COMPILED for v in ('GN', 'BCN', 'BCN-est')
                     if v + COMPILED not in variants]
    variants = [BASELINE] + [v for v in variants if v != BASELINE]
    shapes = []
    for n in args.batch:
        for stage in args.stages:
            channels, stride = RESNET50_STAGES[stage]
            height, width = (args.image_size * 2)[:2]
            shapes.append((n, channels, max(1, height // stride),
                           max(1, width // stride)))
    dtypes = [getattr(torch, d) for d in args.dtype]
    env['copy_gb_s'] = {
        str(d).replace('torch.', ''): copy_bandwidth(device, d, args.repeat)
        / 1e9 for d in dtypes}
    print(f'torch {env["torch"]}, {env["threads"]} threads, {env["device"]}'
          f', load average {env["load_average"]}, copy GB/s '
          f'{env["copy_gb_s"]}', flush=True)

    peaks = {}
    if not args.no_memory and dtypes == [torch.float32]:
        cases = [(v, list(s)) for s in shapes for v in variants
                 if not v.endswith(COMPILED)]
        if device.type == 'cpu':
            peaks = peaks_in_subprocess(cases, torch.get_num_threads())
        else:
            peaks = {(v, tuple(s)): peak_forward_backward(v, s, device)
                     for v, s in cases}

    results = []
    for dtype in dtypes:
        dname = str(dtype).replace('torch.', '')
        copy_rate = env['copy_gb_s'][dname]
        for shape in shapes:
            results += measure_shape(variants, shape, device, dtype, args,
                                     peaks, copy_rate)
            print(f'done {dname} {shape}', flush=True)

    env['load_average_after'] = load_average()
    summary = {}
    for v in variants:
        if not v.startswith('BCN'):
            continue
        for dtype in args.dtype:
            rows = [r for r in results
                    if r['variant'] == v and r['dtype'] == dtype]
            if rows:
                ratios = [r['fwd_bwd_ratio'] for r in rows]
                summary[f'{v} {dtype} fwd+bwd / GN, worst shape'] = max(
                    ratios)
                summary[f'{v} {dtype} fwd+bwd / GN, median shape'] = \
                    statistics.median(ratios)
                if v.endswith(COMPILED):
                    compiled = compiled_ratios(results, v, dtype)
                    summary[f'{v} {dtype} fwd+bwd / GN{COMPILED}, worst '
                            'shape'] = max(compiled)
                    summary[f'{v} {dtype} fwd+bwd / GN{COMPILED}, median '
                            'shape'] = statistics.median(compiled)
    data = dict(environment=env, results=results, summary=summary,
                target='BCN forward+backward <= 1.1x nn.GroupNorm (GPU), '
                'no regression on CPU')

    header = ['N x C x H x W', 'dtype', 'variant', 'fwd ms', 'fwd+bwd ms',
              'infer ms', 'fwd / GN', 'fwd+bwd / GN', 'infer / GN',
              'fwd+bwd GB/s', 'of copy', 'saved MiB', 'saved / GN',
              'peak MiB', 'peak / GN']
    rows = [['x'.join(map(str, r['shape'])), r['dtype'], r['variant'],
             fmt(r['fwd_ms']), fmt(r['fwd_bwd_ms']), fmt(r['infer_ms']),
             fmt(r['fwd_ratio']), fmt(r['fwd_bwd_ratio']),
             fmt(r['infer_ratio']), fmt(r['fwd_bwd_gb_s'], 1),
             fmt(r['fwd_bwd_of_copy']), fmt(r['saved_mib'], 1),
             fmt(r['saved_ratio']), fmt(r['peak_mib'], 1),
             fmt(r['peak_ratio'])] for r in results]
    text = '\n'.join([
        f'Layer level, {env["device"]}, training mode, '
        f'{env["threads"]} threads, torch {env["torch"]}, BCN (auto): '
        f'{env["bcn_backend"]}; ratios: median '
        f'over {args.repeat} interleaved rounds of the same-round ratio to '
        'nn.GroupNorm; copy bandwidth (GB/s): '
        + ', '.join(f'{k} {v:.0f}' for k, v in env['copy_gb_s'].items()) +
        '.', '', markdown_table(header, rows), '',
        '\n'.join(f'- {k}: {v:.2f}' for k, v in summary.items()),
        f'\n`{env["command"]}`'
    ])
    write_outputs(args.out_dir, 'layer_speed', data, text)
    return data


def compiled_ratios(results: List[dict], variant: str,
                    dtype: str) -> List[float]:
    """Per shape, ``variant``'s forward+backward time over compiled GN's
    (both ratios to eager GN from the same rounds)."""
    def ratios(name):
        return {tuple(r['shape']): r['fwd_bwd_ratio'] for r in results
                if r['variant'] == name and r['dtype'] == dtype}
    base = ratios('GN' + COMPILED)
    return [ratio / base[shape]
            for shape, ratio in ratios(variant).items() if shape in base]


def measure_shape(variants: Sequence[str], shape: Sequence[int],
                  device: torch.device, dtype: torch.dtype, args,
                  peaks: dict, copy_rate: float) -> List[dict]:
    """One row per variant for one shape and dtype."""
    ops = {}
    for v in variants:
        for op, fn in layer_ops(v, shape, device, dtype).items():
            ops[(v, op)] = fn
    times = interleaved(ops, device, args.repeat, args.min_time)
    traffic = 5 * math.prod(shape) * torch.finfo(dtype).bits / 8
    rows = []
    for v in variants:
        row = dict(variant=v, shape=list(shape),
                   dtype=str(dtype).replace('torch.', ''))
        for op in ('fwd', 'fwd_bwd', 'infer'):
            row[f'{op}_ms'] = statistics.median(times[(v, op)]) * 1e3
            row[f'{op}_ratio'] = paired_ratio(times[(v, op)],
                                              times[(BASELINE, op)])
        row['fwd_bwd_gb_s'] = traffic / row['fwd_bwd_ms'] / 1e6
        row['fwd_bwd_of_copy'] = row['fwd_bwd_gb_s'] / copy_rate
        # compiled graphs keep what their own partition chooses
        row['saved_mib'] = None if v.endswith(COMPILED) else \
            saved_for_backward(v, shape, device, dtype) / 2**20
        peak = peaks.get((v, tuple(shape)))
        row['peak_mib'] = None if peak is None else peak / 2**20
        rows.append(row)
    base = rows[0]
    for r in rows:
        r['saved_ratio'] = (None if r['saved_mib'] is None else
                            r['saved_mib'] / base['saved_mib'])
        r['peak_ratio'] = (None if r['peak_mib'] is None
                           or not base['peak_mib'] else
                           r['peak_mib'] / base['peak_mib'])
    return rows


if __name__ == '__main__':
    reexec_with_timing_allocator()
    main()
