# Copyright (c) mmbcn contributors. All rights reserved.
"""The table of BCN backends and how a call picks one.

A backend is one module that declares itself as a :class:`Backend`: the
devices, dtypes, memory layouts and modes it serves, whether it can
synchronize statistics across processes, a check of its own availability
(a compiled extension, Triton) and its ``priority`` in ``auto``. The
built-in ones are the modules named in :data:`BUILTIN`; another package
adds one with :func:`register_backend`. Everything else is derived from
:data:`BACKENDS`, the table they fill:

* the names ``MMBCN_BACKEND`` (read at import) and :func:`set_backend`
  accept: ``auto`` (default) or a registered backend;
* ``auto``: among the backends with a priority, the highest that serves
  the call (the reference, ``python``, serves every call at priority 0);
* a forced backend that cannot serve a call raises :class:`BackendError`
  naming the backend and the reason: it never falls back silently;
* the tests run their backend-parametrized checks over :func:`names`.
"""
import importlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, Optional, Tuple

import torch
from torch import Tensor

from .call import MODES, BCNCall

#: The built-in backends: modules of this package, each defining
#: ``BACKEND``, registered in this order when the package is imported.
BUILTIN = ('python_backend', 'cpu_backend', 'triton_backend')
#: The backend every call can fall back to where no other applies (ONNX
#: export, an empty synchronized batch): it serves every call.
REFERENCE = 'python'
#: Memory layouts a backend can declare (:func:`layout` tells them apart).
LAYOUTS = frozenset({'contiguous', 'channels_last', 'strided'})
FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32,
                    torch.float64})


class BackendError(RuntimeError):
    """A forced backend cannot serve a call, or an unknown name."""


@dataclass(frozen=True)
class Backend:
    """A BCN implementation and what it serves.

    ``forward(call)`` computes BCN for a :class:`~.call.BCNCall` it serves.
    ``devices``, ``dtypes``, ``layouts`` (of :data:`LAYOUTS`) and ``modes``
    (of :data:`~.call.MODES`) are sets; a call outside them is refused
    with a reason naming what it got. ``synchronized``: it can combine
    the batch statistics across processes. ``same_dtype``: parameters and
    buffers must have the input's dtype. ``priority``: ``auto`` tries the
    backends in decreasing priority (``None``: only when forced).
    ``unavailable()`` returns why the backend cannot run at all here
    (``None`` when it can); ``refuse(call)`` returns a further reason
    specific to the call.
    """
    name: str
    forward: Callable[[BCNCall], Tensor]
    devices: FrozenSet[str]
    dtypes: FrozenSet[torch.dtype] = FLOATS
    layouts: FrozenSet[str] = LAYOUTS
    modes: FrozenSet[str] = frozenset(MODES)
    synchronized: bool = True
    same_dtype: bool = False
    priority: Optional[int] = None
    unavailable: Callable[[], Optional[str]] = lambda: None
    refuse: Callable[[BCNCall], Optional[str]] = lambda call: None

    def __post_init__(self):
        for key in ('devices', 'dtypes', 'layouts', 'modes'):
            object.__setattr__(self, key, frozenset(getattr(self, key)))
        for key, known in (('layouts', LAYOUTS), ('modes', MODES)):
            unknown = set(getattr(self, key)) - set(known)
            if unknown:
                raise ValueError(f'Backend {self.name!r}: {key} '
                                 f'{_listed(unknown)} are not among '
                                 f'{_listed(known)}')

    def refusal(self, call: BCNCall) -> Optional[str]:
        """Why this backend cannot serve ``call`` (``None``: it can)."""
        x = call.x
        if x.device.type not in self.devices:
            return (f'it serves {_listed(self.devices, "/")} tensors, got '
                    f'{x.device.type}')
        if x.dtype not in self.dtypes:
            return f'it serves {_listed(self.dtypes)}, got {x.dtype}'
        if call.mode not in self.modes:
            return (f'it serves modes {_listed(self.modes)}, got mode '
                    f'{call.mode!r}')
        if self.same_dtype:
            for name, t in (('batch_weight', call.batch_weight),
                            ('weight', call.weight),
                            ('running_mean', call.running_mean),
                            ('running_var', call.running_var)):
                if t.dtype != x.dtype:
                    return (f'{name} is {t.dtype} and the input {x.dtype}; '
                            'it needs one dtype')
        if layout(x) not in self.layouts:
            return (f'it serves {_listed(self.layouts)} input, got a '
                    f'{layout(x)} one')
        if call.synchronized and not self.synchronized:
            return ('it does not synchronize statistics across processes '
                    '(SyncBCN, or estimate=True with sync_estimates=True '
                    'under torch.distributed)')
        return self.unavailable() or self.refuse(call)


def _listed(items: Iterable, sep: str = ', ') -> str:
    return sep.join(sorted(str(i).replace('torch.', '') for i in items))


def layout(x: Tensor) -> str:
    """``'contiguous'``, ``'channels_last'`` (4-d) or ``'strided'``."""
    if x.is_contiguous():
        return 'contiguous'
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return 'channels_last'
    return 'strided'


BACKENDS: Dict[str, Backend] = {}
_requested = os.environ.get('MMBCN_BACKEND', 'auto')


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` to the table (replacing one of the same name): from
    then on it is a valid ``MMBCN_BACKEND`` / :func:`set_backend` name,
    ``auto`` considers it by its priority, and the backend-parametrized
    tests run it."""
    if backend.name == 'auto':
        raise ValueError("'auto' names the automatic choice, not a backend")
    BACKENDS[backend.name] = backend
    return backend


def names() -> Tuple[str, ...]:
    """The registered backends, ``auto``'s order first (decreasing
    priority), then those only used when forced, in registration order."""
    ranked = sorted((b for b in BACKENDS.values() if b.priority is not None),
                    key=lambda b: -b.priority)
    return tuple(b.name for b in ranked) + tuple(
        b.name for b in BACKENDS.values() if b.priority is None)


def set_backend(name: str) -> str:
    """Choose the backend for every BCN call (``'auto'`` or a name of
    :data:`BACKENDS`); returns the previous choice."""
    global _requested
    _check_name(name, 'set_backend')
    previous, _requested = _requested, name
    return previous


def get_backend() -> str:
    """The requested backend name (``'auto'`` unless forced)."""
    return _requested


def _check_name(name: str, where: str) -> None:
    if name != 'auto' and name not in BACKENDS:
        raise BackendError(f'mmbcn: {where}: unknown BCN backend {name!r}; '
                           f'choose one of auto, {", ".join(BACKENDS)}')


def select(call: BCNCall) -> Backend:
    """The backend that serves ``call`` under the current choice. While a
    model is exported to ONNX (either exporter), the reference: its
    PyTorch operations have ONNX equivalents, the kernels do not."""
    if torch.onnx.is_in_onnx_export():
        return BACKENDS[REFERENCE]
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
    reasons = []
    for candidate in names():
        backend = BACKENDS[candidate]
        if backend.priority is None:
            break
        reason = backend.refusal(call)
        if reason is None:
            return backend
        _warn_unavailable(backend)
        reasons.append(f'{candidate}: {reason}')
    raise BackendError('mmbcn: no BCN backend serves this call ('
                       f'{"; ".join(reasons)})')


_warned = set()


def _warn_unavailable(backend: Backend) -> None:
    """Say once that ``auto`` would have taken ``backend`` but cannot run
    it here at all (e.g. the CPU kernel was not built), rather than
    falling back to the reference in silence."""
    reason = backend.unavailable()
    if reason is not None and backend.name not in _warned:
        _warned.add(backend.name)
        warnings.warn(f"mmbcn: BCN backend '{backend.name}' is unavailable, "
                      f"'auto' takes the next one: {reason}")


def describe(x: Tensor) -> str:
    """One line for logs and benchmarks: which backend a default call on
    ``x`` (unsynchronized, parameters of x's dtype, training) takes, and
    why the others do not serve it."""
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


def _register_builtin() -> None:
    # After everything above: the backend modules import Backend from here.
    for module in BUILTIN:
        register_backend(
            importlib.import_module(f'.{module}', __package__).BACKEND)


_register_builtin()
