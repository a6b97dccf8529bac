# Copyright (c) mmbcn contributors. All rights reserved.
"""The fused CPU kernel of BCN (``csrc/bcn_cpu.cpp``, built by ``setup.py``
as ``mmbcn.cnn._bcn_cpu``).

It computes what :mod:`.bcn_functional` computes, forward and backward, in
four full-size passes like ``nn.GroupNorm``'s, with the O(N*C) arithmetic
and the statistics updates in C++: no Python between the passes, which is
what costs most on small feature maps. :class:`~mmbcn.cnn.BatchChannelNorm`
uses it for contiguous float32/float64 CPU input whose statistics need no
collective (one process, or evaluation); everything else takes the Python
formulation, which gives the same numbers.

``MMBCN_NATIVE=0`` in the environment (read at import) or
:func:`set_enabled` turns the kernel off, for comparison. Neither
implementation has a second derivative: ``create_graph=True`` works, and
differentiating BCN's gradient raises.
"""
import os
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

try:
    from . import _bcn_cpu
    _IMPORT_ERROR: Optional[ImportError] = None
except ImportError as error:  # not built: the Python formulation is used
    _bcn_cpu = None
    _IMPORT_ERROR = error

#: ``mode`` argument of the kernel (see csrc/bcn_cpu.cpp).
FIXED, BATCH, ESTIMATE = 0, 1, 2
_FLOATS = (torch.float32, torch.float64)
_enabled = os.environ.get('MMBCN_NATIVE', '1') != '0'
_warned = False


def built() -> bool:
    """Whether the extension was built and imports."""
    return _bcn_cpu is not None


def enabled() -> bool:
    """Whether BCN layers use the kernel where it applies."""
    return _bcn_cpu is not None and _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the kernel on or off for all BCN layers; returns the previous
    setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


def status() -> str:
    """One line for logs and benchmarks: which implementation runs."""
    if _bcn_cpu is None:
        return f'python (native kernel not built: {_IMPORT_ERROR})'
    if not _enabled:
        return 'python (native kernel turned off)'
    return 'native CPU kernel (mmbcn.cnn._bcn_cpu)'


def applies(x: Tensor, layer: nn.Module) -> bool:
    """Whether ``layer`` (a BatchChannelNorm) can run on ``x`` through the
    kernel: contiguous float32/float64 CPU input with parameters and buffers
    of its dtype, and statistics that need no collective."""
    if x.device.type != 'cpu':
        return False
    if _bcn_cpu is None:
        _warn_once()
        return False
    dtype = x.dtype
    if (not _enabled or dtype not in _FLOATS or not x.is_contiguous()
            or x.numel() == 0):
        return False
    # The module's dicts, not attribute access: this runs on every call.
    params, buffers = layer._parameters, layer._buffers
    return (params['weight'].dtype == dtype
            and params['batch_weight'].dtype == dtype
            and buffers['running_mean'].dtype == dtype
            and buffers['running_var'].dtype == dtype
            and not (layer.training and layer._synchronized))


def bcn(x: Tensor, layer: nn.Module) -> Tensor:
    """BCN of ``x`` (N, C, *) by ``layer``'s parameters and statistics,
    updating its buffers as :class:`~mmbcn.cnn.BatchChannelNorm` does."""
    if not layer.training:
        mode, factor = FIXED, 0.0
    elif layer.estimate:
        mode, factor = ESTIMATE, layer.update_rate
    else:
        momentum = layer.momentum
        mode, factor = BATCH, -1.0 if momentum is None else momentum
    params, buffers = layer._parameters, layer._buffers
    return _bcn_cpu.bcn(x, params['batch_weight'], params['batch_bias'],
                        params['weight'], params['bias'],
                        buffers['running_mean'], buffers['running_var'],
                        buffers['num_batches_tracked'], layer.num_groups,
                        layer.eps, mode, factor)


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            'mmbcn: the native BCN kernel is not built, BCN on CPU runs the '
            'slower Python formulation (same results). Rebuild with '
            '`pip install --no-build-isolation -e .` '
            f'({_IMPORT_ERROR})')
