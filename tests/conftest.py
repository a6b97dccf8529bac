"""Fixtures shared by the test files: the repository root and the BCN
helpers of tests/helpers/backend_steps.py (which processes started by a
test import directly, where fixtures do not reach)."""
import gc
import os
import pathlib
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
# The tests' shared modules (tests/helpers/), importable by the test files
# and, through PYTHONPATH (tool_runner.tool_env), by the processes they
# start.
sys.path.insert(0, os.path.join(HERE, 'helpers'))

# Without a GPU, the Triton backend's kernels run on CPU tensors in
# Triton's interpreter, which reads this before Triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from backend_steps import random_bcn, seeded_randn  # noqa: E402

CORES = len(os.sched_getaffinity(0))
MAX_WORKERS = 4  # the heaviest tests hold ~1.5 GB each


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (setup.cfg's addopts): one worker per core, at most
    :data:`MAX_WORKERS`."""
    return max(1, min(CORES, MAX_WORKERS))


# Under pytest-xdist each worker gets its share of the cores, for torch's
# own threads and for the processes that tests start (OMP_NUM_THREADS),
# instead of every worker using them all at once.
if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):
    _share = max(1, CORES // int(os.environ['PYTEST_XDIST_WORKER_COUNT']))
    os.environ['OMP_NUM_THREADS'] = str(_share)
    torch.set_num_threads(_share)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (stable otherwise), so that with several
    workers the last ones to finish are short tests, not a long one that
    keeps one worker busy while the others are idle."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def pytest_collection_finish(session):
    """Freeze what importing the test modules created (torch, mmdet,
    mmseg: half a million objects) out of the garbage collector's sight:
    mmengine and torch collect garbage some 300 times in a run (for every
    dataset built, for instance), and each collection would walk them all
    again (0.19 s). They are handed back at the end (triton's bindings
    report objects still alive at exit as leaks)."""
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config):
    gc.unfreeze()


@pytest.fixture(scope='session')
def repo_root():
    """The repository root (configs/, tools/, tests/)."""
    return pathlib.Path(HERE).parent


@pytest.fixture
def bcn():
    """``bcn(c=8, g=4, dtype=float64, seed=0, cls=None, **kwargs)``: a BCN
    layer with non-trivial affines and statistics."""
    return random_bcn


@pytest.fixture
def randn():
    """``randn(*shape, dtype=float64, seed=1, loc=0, scale=1)``: seeded
    random tensors."""
    return seeded_randn


@pytest.fixture
def restore_default_scope():
    """Put mmengine's current default scope back after the test: a Runner
    built in this process (a tool's ``main``) leaves its config's scope
    current, where later builds without a scope would look names up."""
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
