"""Shared by the BCN tests: a layer with non-trivial affines and
statistics, seeded random inputs, the backends of mmbcn.ops's table as
test parameters, forcing a backend for a block (the one way the tests
do), and recording a layer's outputs, gradients and buffers over training
steps. Needs torch and pytest alone (the Triton tests run on a GPU machine
without OpenMMLab)."""
import contextlib

import pytest
import torch

from bcn_reference import randomize
from mmbcn import ops
from mmbcn.ops import backends


def random_bcn(c=8, g=4, dtype=torch.float64, seed=0, cls=None,
               device='cpu', **kwargs):
    """``cls`` (default BatchChannelNorm)(c, g, **kwargs) with the
    affines and statistics of ``randomize(layer, seed)``."""
    layer = (cls or ops.BatchChannelNorm)(c, g, **kwargs)
    return randomize(layer.to(device, dtype), seed)


def seeded_randn(*shape, dtype=torch.float64, seed=1, loc=0.0, scale=1.0,
                 device='cpu'):
    """``loc + scale * randn(shape)`` from its own generator: the same
    numbers in every test, process and order of tests."""
    gen = torch.Generator().manual_seed(seed)
    x = loc + scale * torch.randn(*shape, generator=gen, dtype=dtype)
    return x.to(device)


def backend_params(device='cpu'):
    """One pytest parameter per backend of the table (registered ones
    included, in ``backends.names()``'s order) that serves ``device``;
    skipped, with the reason, where it cannot run here."""
    params = []
    for name in backends.names():
        backend = ops.BACKENDS[name]
        if device not in backend.devices:
            continue
        reason = backend.unavailable()
        params.append(pytest.param(name, id=name, marks=pytest.mark.skipif(
            reason is not None, reason=str(reason))))
    return params


@contextlib.contextmanager
def use_backend(name):
    """Force BCN onto backend ``name`` inside the block."""
    previous = ops.set_backend(name)
    try:
        yield
    finally:
        ops.set_backend(previous)


def training_steps(module, x, dy, steps):
    """Outputs, gradients (input and parameters) and buffers of ``module``
    after ``steps`` training steps on ``x`` with output gradient ``dy``."""
    params = list(module.parameters())
    results = []
    for _ in range(steps):
        xi = x.clone().requires_grad_()
        y = module(xi)
        results += [y, *torch.autograd.grad(y, [xi, *params], dy)]
    return results + [b.clone() for b in module.buffers()]
