# Copyright (c) mmbcn contributors. All rights reserved.
"""The ``cpu`` backend: the fused C++ kernel (``csrc/bcn_cpu.cpp``, built
by ``setup.py`` as ``mmbcn.ops._bcn_cpu``).

The extension registers two operators with PyTorch's dispatcher,
``torch.ops.mmbcn.bcn_cpu_forward`` and ``bcn_cpu_backward``, so
``torch.jit.trace``, ``torch.export``, meta tensors and ``torch.compile``
see BCN as one op. This module gives them their shapes on meta/fake
tensors and their autograd formula. The forward operator is functional:
it returns the new statistics, which :func:`forward` copies into the
buffers. Only ``x`` and O(N*C) statistics are kept for the backward pass.
The backward operator has no derivative of its own: differentiating BCN's
gradient raises.
"""
import importlib.util
from typing import Optional

import torch
from torch import Tensor

from .call import BATCH, ESTIMATE, FIXED, BCNCall

try:
    from . import _bcn_cpu  # noqa: F401  (registers torch.ops.mmbcn.*)
    _IMPORT_ERROR: Optional[ImportError] = None
except ImportError as error:  # not built: auto uses the python backend
    _bcn_cpu = None
    _IMPORT_ERROR = ('mmbcn.ops._bcn_cpu is missing' if importlib.util.
                     find_spec(f'{__package__}._bcn_cpu') is None else
                     str(error))

_MODE = {FIXED: 0, BATCH: 1, ESTIMATE: 2}


def unavailable() -> Optional[str]:
    if _bcn_cpu is None:
        return ('the native kernel is not built (`python setup.py build_ext '
                f'--inplace`, see README; {_IMPORT_ERROR})')
    return None


def refuse(call: BCNCall) -> Optional[str]:
    if call.x.dim() < 3 or call.x.numel() == 0:
        return 'it needs a non-empty (N, C, L, ...) input'
    return None


def forward(call: BCNCall) -> Tensor:
    mode = _MODE[call.mode]
    factor = 0.0
    if call.mode == BATCH:
        call.num_batches_tracked.add_(1)
        factor = (1.0 / int(call.num_batches_tracked)
                  if call.rate is None else call.rate)
    elif call.mode == ESTIMATE:
        factor = call.rate
    y, new_mean, new_var, _ = torch.ops.mmbcn.bcn_cpu_forward(
        call.x, call.batch_weight, call.batch_bias, call.weight, call.bias,
        call.running_mean, call.running_var, call.num_groups, call.eps,
        mode, float(factor))
    if call.mode != FIXED:
        with torch.no_grad():
            call.running_mean.copy_(new_mean)
            call.running_var.copy_(new_var)
    return y


def _register() -> None:
    forward_op = 'mmbcn::bcn_cpu_forward'
    backward_op = 'mmbcn::bcn_cpu_backward'

    @torch.library.register_fake(forward_op)
    def _(x, batch_weight, batch_bias, weight, bias, running_mean,
          running_var, groups, eps, mode, factor):
        n, c = x.shape[:2]
        size = 3 * n * c + 3 * c + 2 * n * groups  # Stats in bcn_cpu.cpp
        return (torch.empty_like(x), torch.empty_like(running_mean),
                torch.empty_like(running_var),
                x.new_empty(size, dtype=torch.float64))

    @torch.library.register_fake(backward_op)
    def _(dy, x, stats, groups, mode, output_mask):
        c = x.shape[1]
        shapes = (x.shape, (c, ), (c, ), (groups, ), (groups, ))
        return tuple(x.new_empty(s) if m else None
                     for s, m in zip(shapes, output_mask))

    def setup_context(ctx, inputs, output):
        x, *_ = inputs
        ctx.groups, ctx.mode = inputs[7], inputs[9]
        # The O(N*C) statistics ride on ctx; only x is a saved tensor.
        ctx.stats = output[3]
        ctx.save_for_backward(x)

    def backward(ctx, dy, *_):
        (x, ) = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:5])
        grads = torch.ops.mmbcn.bcn_cpu_backward(dy, x, ctx.stats,
                                                 ctx.groups, ctx.mode, mask)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_autograd(forward_op, backward,
                                    setup_context=setup_context)

    def no_second_derivative(ctx, *grads):
        raise RuntimeError(
            'BCN has no second derivative: its backward pass is computed by '
            'hand (every backend)')

    def no_context(ctx, inputs, output):
        pass

    torch.library.register_autograd(backward_op, no_second_derivative,
                                    setup_context=no_context)


if _bcn_cpu is not None:
    _register()
