"""Run a function in N real torch.distributed (gloo) processes on CPU.

The processes are forked from a forkserver: a clean process (no thread
pool started, as a fresh interpreter) that imported torch and mmbcn once,
so that each run's processes start in a fraction of a second instead of
importing them again. What the function's module imports beyond those is
imported by each process, as with ``spawn``."""
import multiprocessing
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


PRELOAD = ['torch', 'torch.distributed', 'mmbcn', 'dist_utils']


def run_distributed(fn, world_size=2, *args):
    """Raise in the parent if any process raises."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args),
                       nprocs=world_size, join=True,
                       start_method='forkserver')
