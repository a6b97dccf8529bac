"""Shared by the backend tests: force a backend for a block, and record a
layer's outputs, gradients and buffers over training steps. Needs torch
alone (the Triton tests run on a GPU machine without OpenMMLab)."""
import contextlib

import torch

from mmbcn import ops


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
