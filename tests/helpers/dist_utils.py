"""Separate processes that start fast, and a function run in N real
torch.distributed (gloo) processes on CPU with them."""
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


def process_context(*preload):
    """multiprocessing's forkserver context: processes forked from a clean
    server (no thread pool started, as a fresh interpreter) that imported
    :data:`PRELOAD` and ``preload`` once, so that they start in a fraction
    of a second. The call that starts this process's server decides what
    it imports; a process imports what is missing itself, as with
    'spawn'."""
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload(PRELOAD + list(preload))
    return context


def run_distributed(fn, world_size=2, *args):
    """Raise in the parent if any process raises."""
    process_context()
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args),
                       nprocs=world_size, join=True,
                       start_method='forkserver')
