# Copyright (c) mmbcn contributors. All rights reserved.
"""The table of BCN backends and how a call picks one.

Each backend declares what it serves: devices, dtypes, memory layouts and
whether it can synchronize statistics across processes, plus a check of
its own availability (a compiled extension, Triton). Selection:

* ``MMBCN_BACKEND`` (read at import) or :func:`set_backend`: ``auto``
  (default), ``python``, ``cpu`` or ``triton``;
* ``auto``: the ``cpu`` kernel for CPU tensors it serves (unless
  ``MMBCN_NATIVE=0``), on CUDA the backends of :data:`CUDA_AUTO`, else
  ``python``, the reference that serves every call;
* a forced backend that cannot serve a call raises :class:`BackendError`
  naming the backend and the reason: it never falls back silently.
"""
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from .call import BCNCall

ALL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: On CUDA, ``auto`` tries these in order. Triton joins once a GPU run has
#: measured it faster than the Python formulation and exact there
#: (docs/performance.md records that run); until then, the reference.
CUDA_AUTO: Tuple[str, ...] = ('python', )


class BackendError(RuntimeError):
    """A forced backend cannot serve a call, or an unknown name."""


@dataclass(frozen=True)
class Backend:
    """A BCN implementation and what it serves.

    ``layouts``: ``'any'``, ``'contiguous'``, or ``'contiguous,
    channels_last'``. ``same_dtype``: parameters and buffers must have the
    input's dtype. ``unavailable()`` returns why the backend cannot run
    at all here (``None`` when it can); ``refuse(call)`` returns a
    further reason specific to the call.
    """
    name: str
    forward: Callable[[BCNCall], Tensor]
    devices: Tuple[str, ...]
    dtypes: Tuple[torch.dtype, ...] = ALL_FLOATS
    layouts: str = 'any'
    synchronized: bool = True
    same_dtype: bool = False
    unavailable: Callable[[], Optional[str]] = lambda: None
    refuse: Callable[[BCNCall], Optional[str]] = lambda call: None

    def refusal(self, call: BCNCall) -> Optional[str]:
        """Why this backend cannot serve ``call`` (``None``: it can)."""
        x = call.x
        device = x.device.type
        if device not in self.devices:
            return f'it serves {"/".join(self.devices)} tensors, got {device}'

        if x.dtype not in self.dtypes:
            names = ', '.join(str(d).replace('torch.', '')
                              for d in self.dtypes)
            return f'it serves {names}, got {x.dtype}'
        if self.same_dtype:
            for name, t in (('batch_weight', call.batch_weight),
                            ('weight', call.weight),
                            ('running_mean', call.running_mean),
                            ('running_var', call.running_var)):
                if t.dtype != x.dtype:
                    return (f'{name} is {t.dtype} and the input {x.dtype}; '
                            'it needs one dtype')
        layout = _layout(x)
        if self.layouts != 'any' and layout not in self.layouts.split(', '):
            return f'it serves {self.layouts} input, got a {layout} one'
        if call.synchronized and not self.synchronized:
            return ('it does not synchronize statistics across processes '
                    '(SyncBCN, or estimate=True with sync_estimates=True '
                    'under torch.distributed)')
        return self.unavailable() or self.refuse(call)


def _layout(x: Tensor) -> str:
    if x.is_contiguous():
        return 'contiguous'
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return 'channels_last'
    return 'strided'


BACKENDS: Dict[str, Backend] = {}
_NAMES = ('auto', 'python', 'cpu', 'triton')
_requested = os.environ.get('MMBCN_BACKEND', 'auto')
_native = os.environ.get('MMBCN_NATIVE', '1') != '0'


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


def set_backend(name: str) -> str:
    """Choose the backend for every BCN call (``'auto'``, ``'python'``,
    ``'cpu'``, ``'triton'``); returns the previous choice."""
    global _requested
    _check_name(name, 'set_backend')
    previous, _requested = _requested, name
    return previous


def get_backend() -> str:
    """The requested backend name (``'auto'`` unless forced)."""
    return _requested


def _check_name(name: str, where: str) -> None:
    if name not in _NAMES:
        raise BackendError(f'mmbcn: {where}: unknown BCN backend {name!r}; '
                           f'choose one of {", ".join(_NAMES)}')


def select(call: BCNCall) -> Backend:
    """The backend that serves ``call`` under the current choice. While a
    model is exported to ONNX (either exporter), the reference: its
    PyTorch operations have ONNX equivalents, the kernels do not."""
    if torch.onnx.is_in_onnx_export():
        return BACKENDS['python']
    name = _requested
    if name != 'auto':
        _check_name(name, 'MMBCN_BACKEND')
        backend = BACKENDS[name]
        reason = backend.refusal(call)
        if reason is not None:
            raise BackendError(
                f"mmbcn: BCN backend '{name}' (MMBCN_BACKEND / "
                f'mmbcn.ops.set_backend) cannot serve this call: {reason}. '
                "Use 'auto' to let mmbcn choose.")
        return backend
    for candidate in _auto_order(call.x.device.type):
        backend = BACKENDS.get(candidate)
        if backend is None:
            continue
        if backend.refusal(call) is None:
            return backend
        _warn_unavailable(backend)
    return BACKENDS['python']


_warned = set()


def _warn_unavailable(backend: Backend) -> None:
    """Say once that ``auto`` would have taken ``backend`` but cannot run
    it here at all (e.g. the CPU kernel was not built), rather than
    falling back to the reference in silence."""
    reason = backend.unavailable()
    if reason is not None and backend.name not in _warned:
        _warned.add(backend.name)
        warnings.warn(f"mmbcn: BCN backend '{backend.name}' is unavailable, "
                      f'BCN runs the slower python reference: {reason}')


def _auto_order(device: str) -> Tuple[str, ...]:
    if device == 'cpu':
        return ('cpu', ) if _native else ()
    if device == 'cuda':
        return CUDA_AUTO
    return ()


def describe(x: Tensor) -> str:
    """One line for logs and benchmarks: which backend a default call on
    ``x`` (unsynchronized, parameters of x's dtype, training) takes, and
    why the faster ones do not serve it."""
    c = x.shape[1]
    one = x.new_ones(c)
    call = BCNCall(x, x.new_zeros(c), one, torch.zeros((), dtype=torch.long),
                   one, x.new_zeros(c), one[:1], one[:1] * 0, 1, 'batch',
                   torch.tensor(0.1, dtype=torch.float64), 1e-5)
    chosen = select(call).name
    notes = [f'{b.name}: {b.refusal(call)}' for b in BACKENDS.values()
             if b.name != chosen and b.refusal(call) is not None]
    suffix = f' ({"; ".join(notes)})' if notes else ''
    return f'{chosen} [requested {_requested}]{suffix}'
