# Copyright (c) mmbcn contributors. All rights reserved.
"""The ``cpu`` backend: the fused C++ kernel (``csrc/bcn_cpu.cpp``, built
by ``setup.py`` as ``mmbcn.ops._bcn_cpu``).

The extension registers two operators with PyTorch's dispatcher,
``torch.ops.mmbcn.bcn_cpu_forward`` and ``bcn_cpu_backward``, so
``torch.jit.trace``, ``torch.export``, meta tensors and ``torch.compile``
see BCN as one op; its autograd formula is registered in C++ too (no
Python between the dispatcher and the kernels in a training step). This
module gives the operators their shapes on meta/fake tensors. The forward
operator updates the statistics buffers in place, declared mutable in its
schema, as aten's ``native_batch_norm``. Only ``x`` and O(N*C) statistics
are kept for the backward pass. Differentiating BCN's gradient raises.
"""
import importlib.util
import os
from typing import Optional

import torch
from torch import Tensor

from . import saved_stats
from .backends import Backend
from .call import BATCH, MODE_CODES, BCNCall

try:
    from . import _bcn_cpu  # noqa: F401  (registers torch.ops.mmbcn.*)
    _IMPORT_ERROR: Optional[ImportError] = None
except ImportError as error:  # not built: auto uses the python backend
    _bcn_cpu = None
    _IMPORT_ERROR = ('mmbcn.ops._bcn_cpu is missing' if importlib.util.
                     find_spec(f'{__package__}._bcn_cpu') is None else
                     str(error))


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
    # the momentum or Algorithm 1's r, as the operator's one rate argument
    rate = call.momentum if call.mode == BATCH else call.update_rate
    # Eager calls (no tracer, no dispatch mode, no tensor subclass) enter
    # the operator's autograd directly; tracing, torch.compile/export and
    # dispatch modes see the operator.
    op = _bcn_cpu.forward if _eager(call.x) else \
        torch.ops.mmbcn.bcn_cpu_forward
    y, _ = op(call.x, call.batch_weight, call.batch_bias, call.weight,
              call.bias, call.running_mean, call.running_var,
              call.num_batches_tracked, call.num_groups, call.eps,
              MODE_CODES[call.mode], rate)
    return y


def _eager(x: Tensor) -> bool:
    # No public query says whether a dispatch mode (FakeTensorMode,
    # FlopCounterMode, ...) is active; torch's own one is private.
    return (type(x) in _BASE_TENSOR_TYPES and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch._C._len_torch_dispatch_stack())


_BASE_TENSOR_TYPES = (Tensor, torch.nn.Parameter)  # not a subclass


def _register() -> None:
    forward_op = 'mmbcn::bcn_cpu_forward'
    backward_op = 'mmbcn::bcn_cpu_backward'

    @torch.library.register_fake(forward_op)
    def _(x, batch_weight, batch_bias, weight, bias, running_mean,
          running_var, num_batches_tracked, groups, eps, stats_mode, rate):
        size = saved_stats.total(x.shape[0], x.shape[1], groups)
        return torch.empty_like(x), x.new_empty(size, dtype=torch.float64)

    @torch.library.register_fake(backward_op)
    def _(dy, x, stats, groups, stats_mode, output_mask):
        c = x.shape[1]
        shapes = (x.shape, (c, ), (c, ), (groups, ), (groups, ))
        return tuple(x.new_empty(s) if m else None
                     for s, m in zip(shapes, output_mask))


if _bcn_cpu is not None:
    _register()


#: Contiguous float32/float64 CPU input with parameters of its dtype, one
#: process; ``auto``'s choice there unless ``MMBCN_NATIVE=0``.
BACKEND = Backend(
    'cpu', forward, devices={'cpu'}, dtypes={torch.float32, torch.float64},
    layouts={'contiguous'}, synchronized=False, same_dtype=True,
    priority=None if os.environ.get('MMBCN_NATIVE', '1') == '0' else 10,
    unavailable=unavailable, refuse=refuse)
