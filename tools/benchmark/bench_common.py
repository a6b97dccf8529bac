# Copyright (c) mmbcn contributors. All rights reserved.
"""What the benchmarks in this folder share: timing (interleaved rounds,
paired ratios), memory (autograd's saved bytes, the peak of a block, CPU
peaks in a child process), the start of every ``main`` (the memory
worker, threads, the description of the machine and the run) and the
outputs (``<name>.json`` and ``<name>.md``, written atomically).

Imports with torch alone (no OpenMMLab package): ``layer_speed.py`` runs
on a GPU machine that has torch (and Triton) only. The scripts import it
from beside them (``python tools/benchmark/<tool>.py`` puts this folder on
``sys.path``).
"""
import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import os.path as osp
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from mmbcn.ops import describe
from mmbcn.utils import atomic_outputs, markdown_table

__all__ = [
    'MALLOC_ENV', 'TIMING_MALLOC_ENV', 'synchronize', 'calibrate',
    'seconds_per_call', 'interleaved', 'paired_ratio', 'median_seconds',
    'saved_bytes_counter', 'reset_peak_rss', 'peak_memory',
    'memory_worker_env', 'run_memory_worker', 'reexec_with_timing_allocator',
    'environment', 'markdown_table', 'fmt', 'write_outputs'
]

# Memory measurements: freed blocks above 64 KiB go back to the system at
# once, so the resident set follows what is allocated.
MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': '65536'}
# For timing: blocks up to glibc's largest threshold (32 MiB) come from the
# heap, and freed memory is not returned to the system.
TIMING_MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(32 * 2**20),
                     'MALLOC_TRIM_THRESHOLD_': str(2**40)}


# ---------------------------------------------------------------- timing

def synchronize(device: torch.device) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def calibrate(fn: Callable[[], None], device: torch.device,
              min_time: float) -> int:
    """Calls of ``fn`` per measurement so that one lasts ``min_time``."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, math.ceil(min_time / once))


def seconds_per_call(fn: Callable[[], None], loops: int,
                     device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / loops


def interleaved(ops: Dict[str, Callable[[], None]], device: torch.device,
                repeat: int, min_time: float, warmup: int = 2
                ) -> Dict[str, List[float]]:
    """Seconds per call of each op, ``repeat`` rounds, the ops interleaved
    in rotating order within each round, after ``warmup`` calls each
    (``min_time`` <= 0: one call per measurement)."""
    for fn in ops.values():
        for _ in range(warmup):
            fn()
    loops = {name: 1 if min_time <= 0 else calibrate(fn, device, min_time)
             for name, fn in ops.items()}
    names = list(ops)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(seconds_per_call(ops[name], loops[name],
                                                device))
    return times


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over rounds of the per-round ratio."""
    return statistics.median(t / b for t, b in zip(times, base))


def median_seconds(times: Dict[str, List[float]]) -> Dict[str, float]:
    """The median of each op's rounds."""
    return {name: statistics.median(v) for name, v in times.items()}


# ---------------------------------------------------------------- memory

@contextlib.contextmanager
def saved_bytes_counter():
    """Counts the bytes autograd saves for backward, once per storage.
    Yields a dict whose ``'bytes'`` holds the total when the block ends."""
    storages: Dict[int, int] = {}
    result = {'bytes': 0}

    def pack(t: Tensor):
        if t.device.type != 'meta':
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result['bytes'] = sum(storages.values())


def _proc_status(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            match = re.search(rf'^{key}:\s+(\d+) kB', f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (Linux)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    return _proc_status('VmHWM') is not None


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Bytes a block adds at its peak over what was in use before it
    (CUDA: allocator; CPU: resident set, meaningful when freed memory goes
    back to the system, see ``MALLOC_ENV``). ``None`` where unmeasurable.
    """
    device = torch.device(device)
    result = {'bytes': None}
    gc.collect()
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result['bytes'] = torch.cuda.max_memory_allocated(device) - before
        return
    ok = reset_peak_rss()
    before = _proc_status('VmRSS')
    yield result
    if ok and before is not None:
        result['bytes'] = _proc_status('VmHWM') - before


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark shares: memory measurement, output
    folder, allocator, and the hidden memory-worker entry."""
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory measurement')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--system-malloc', action='store_true',
                        help='time with the default allocator settings')
    parser.add_argument('--memory-worker', help=argparse.SUPPRESS)


def memory_worker_env() -> Dict[str, str]:
    """Environment of a memory-measuring child: ``MALLOC_ENV``, without the
    timing settings (which would keep freed memory resident)."""
    env = {k: v for k, v in os.environ.items() if k not in TIMING_MALLOC_ENV}
    env.update(MALLOC_ENV)
    return env


def run_memory_worker(script: str, spec: dict) -> List[dict]:
    """Run ``python script --memory-worker JSON(spec)`` in a fresh process
    with ``MALLOC_ENV``, so that freed blocks leave its resident set at
    once; the JSON objects it printed, one a line."""
    out = subprocess.run(
        [sys.executable, osp.abspath(script), '--memory-worker',
         json.dumps(spec)],
        env=memory_worker_env(), check=True, stdout=subprocess.PIPE,
        text=True).stdout
    return [json.loads(line) for line in out.splitlines()
            if line.startswith('{')]


def reexec_with_timing_allocator() -> None:
    """Re-run this command under ``TIMING_MALLOC_ENV`` (Linux, CPU, unless
    ``--system-malloc``)."""
    argv = sys.argv[1:]
    if (not sys.platform.startswith('linux') or '--system-malloc' in argv
            or '--memory-worker' in argv
            or any(a.startswith('--device') and 'cuda' in a for a in argv)
            or 'cuda' in argv
            or all(os.environ.get(k) == v
                   for k, v in TIMING_MALLOC_ENV.items())):
        return
    print('re-running with ' + ' '.join(
        f'{k}={v}' for k, v in TIMING_MALLOC_ENV.items()), flush=True)
    os.execve(sys.executable, [sys.executable, sys.argv[0]] + argv,
              dict(os.environ, **TIMING_MALLOC_ENV))


# ------------------------------------------------------------ begin, end
def begin(argv: Optional[Sequence[str]], parse_args: Callable,
          memory_worker: Callable[[dict], None]):
    """The start every benchmark's ``main`` shares: parse ``argv`` (None:
    the command line); in a memory worker (``--memory-worker JSON``) run
    ``memory_worker`` on its spec and return None; else set ``--threads``
    and return (argv, args, device, environment)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(json.loads(args.memory_worker))
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    return argv, args, device, environment(device, [sys.argv[0]] + argv)


def finish(out_dir: str, name: str, env: dict, results: dict,
           text: str) -> dict:
    """Write the benchmark's outputs (``write_outputs``: the environment
    and ``results`` as JSON, ``text`` as markdown); return that data."""
    data = dict(environment=env, results=results)
    write_outputs(out_dir, name, data, text)
    return data


# ---------------------------------------------------------------- report

def environment(device: torch.device, argv: Sequence[str]) -> dict:
    """The run and the machine: command, date, torch, threads, CPU, device
    (and GPU), the BCN backend ``auto`` takes there, allocator settings,
    load average."""
    device = torch.device(device)
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = re.search(r'model name\s*:\s*(.*)', f.read()).group(1)
    except (OSError, AttributeError):
        pass
    env = dict(
        command=' '.join(['python'] + list(argv)),
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        cpu=cpu,
        device=str(device),
        bcn_backend=describe(torch.ones(1, 32, 2, device=device)),
        malloc_env={k: os.environ[k]
                    for k in TIMING_MALLOC_ENV if k in os.environ},
        load_average=load_average())
    if device.type == 'cuda':
        env['gpu'] = torch.cuda.get_device_name(device)
    return env


def load_average() -> Optional[List[float]]:
    return list(os.getloadavg()) if hasattr(os, 'getloadavg') else None


def fmt(value, digits=2, scale=1.0) -> str:
    return '-' if value is None else f'{value * scale:.{digits}f}'


def write_outputs(out_dir: str, name: str, data: dict, text: str) -> None:
    """``out_dir/name.json`` (``data``) and ``out_dir/name.md`` (``text``),
    both complete or neither; then print ``text``."""
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.join(out_dir, name)
    with atomic_outputs(f'{stem}.json', f'{stem}.md') as (json_tmp, md_tmp):
        with open(json_tmp, 'w') as f:
            json.dump(data, f, indent=2)
        with open(md_tmp, 'w') as f:
            f.write(text + '\n')
    print(text)
    print(f'\nwrote {stem}.json and .md')
