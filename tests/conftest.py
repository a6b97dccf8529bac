"""Fixtures shared by the test files: the repository root and the BCN
helpers of tests/helpers/backend_steps.py (which processes started by a
test import directly, where fixtures do not reach)."""
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
