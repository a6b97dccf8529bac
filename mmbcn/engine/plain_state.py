# Copyright (c) mmbcn contributors. All rights reserved.
"""Encode checkpoint state as data that ``torch.load(weights_only=True)``
accepts, and decode it back.

mmengine 0.10 and user hooks store numpy arrays, scalars and dtypes,
``collections.Counter``, ``HistoryBuffer`` objects (whose pickled form
calls ``builtins.getattr``), sets, paths, dates and times, enums, bytes and
dicts with numpy keys in checkpoints. Each that weights-only unpickling
would refuse is written as a tagged dict of tensors and Python primitives.
Anything else raises a TypeError naming where it sits (e.g.
``checkpoint['meta']['x']``), before anything is written, so nothing is
silently dropped and no file is written that cannot be loaded back.
"""
import datetime
import enum
import pathlib
import sys
from collections import Counter, OrderedDict
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

TAG = '__mmbcn_plain__'
# Stored as they are (exact types: a subclass, e.g. numpy.float64 or a str
# Enum, would pickle its own class).
_PRIMITIVES = {str, int, float, bool, complex, type(None), bytes, bytearray,
               torch.Size, torch.dtype, torch.device}
_PATHS = {cls.__name__: cls for cls in (
    pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath,
    pathlib.PurePosixPath, pathlib.PureWindowsPath)}
_TIMES = {cls.__name__: cls for cls in (datetime.datetime, datetime.date,
                                        datetime.time)}


def _plain_key(key) -> bool:
    if type(key) is tuple:
        return all(_plain_key(k) for k in key)
    return type(key) in _PRIMITIVES and type(key) is not bytearray


def encode(obj: Any, where: str = 'checkpoint') -> Any:
    """Plain-data form of ``obj`` (a new object; ``obj`` is not changed)."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PRIMITIVES:
        return obj
    if isinstance(obj, HistoryBuffer):
        return {
            TAG: 'HistoryBuffer',
            'log_history': torch.as_tensor(obj._log_history),
            'count_history': torch.as_tensor(obj._count_history),
            'max_length': obj.max_length,
        }
    if isinstance(obj, (np.ndarray, np.generic)):
        return _encode_numpy(obj, where)
    if isinstance(obj, np.dtype):
        return {TAG: 'numpy_dtype', 'dtype': obj.str}
    if isinstance(obj, enum.Enum):
        cls = type(obj)
        return {TAG: 'Enum', 'module': cls.__module__,
                'class': cls.__qualname__, 'name': obj.name,
                'value': encode(obj.value, f'{where}.value')}
    if isinstance(obj, pathlib.PurePath):
        return {TAG: 'Path', 'class': type(obj).__name__, 'path': str(obj)}
    if isinstance(obj, datetime.timedelta):
        return {TAG: 'timedelta', 'days': obj.days, 'seconds': obj.seconds,
                'microseconds': obj.microseconds}
    if isinstance(obj, tuple(_TIMES.values())):
        return {TAG: type(obj).__name__ if type(obj).__name__ in _TIMES
                else _time_kind(obj), 'iso': obj.isoformat()}
    if isinstance(obj, (set, frozenset)):
        return {TAG: type(obj).__name__ if type(obj) in (set, frozenset)
                else 'set',
                'items': [encode(v, f'{where}{{}}') for v in obj]}
    if isinstance(obj, Counter):
        return {TAG: 'Counter', 'items': encode(dict(obj), where)}
    if isinstance(obj, dict):
        return _encode_dict(obj, where)
    if type(obj) in (list, tuple):  # not subclasses: a namedtuple's
        # fields would be lost in silence; it is refused below instead
        items = [encode(v, f'{where}[{i}]') for i, v in enumerate(obj)]
        return items if type(obj) is list else tuple(items)
    raise TypeError(f'{where} holds a {type(obj).__module__}.'
                    f'{type(obj).__qualname__}, which a weights_only '
                    'checkpoint cannot store: convert it to plain data '
                    '(numbers, strings, lists, dicts, tensors) before '
                    'saving')


def _time_kind(obj) -> str:
    for name in ('datetime', 'date', 'time'):  # datetime before date
        if isinstance(obj, _TIMES[name]):
            return name
    raise AssertionError(obj)


def _encode_dict(obj: dict, where: str):
    if all(_plain_key(k) for k in obj):
        items = {k: encode(v, f'{where}[{k!r}]') for k, v in obj.items()}
        return OrderedDict(items) if isinstance(obj, OrderedDict) else items
    return {TAG: 'dict', 'ordered': isinstance(obj, OrderedDict),
            'keys': [encode(k, f'{where} key {k!r}') for k in obj],
            'values': [encode(v, f'{where}[{k!r}]')
                       for k, v in obj.items()]}


def _encode_numpy(obj, where: str) -> dict:
    if isinstance(obj, np.generic):
        return {TAG: 'numpy_scalar_array',
                'array': _encode_numpy(np.asarray(obj), where)}
    if obj.dtype == object:
        return {TAG: 'object_ndarray', 'shape': list(obj.shape),
                'items': [encode(v, f'{where}[]') for v in obj.ravel()]}
    if obj.dtype.fields is not None or obj.dtype.kind == 'V':
        raise TypeError(f'{where} holds a numpy array of structured dtype '
                        f'{obj.dtype}, which this encoder does not store')
    if obj.dtype.kind in 'biufc' and obj.dtype.isnative:
        try:
            return {TAG: 'ndarray', 'data': torch.from_numpy(obj.copy()),
                    'dtype': obj.dtype.str}
        except TypeError:  # a dtype torch lacks: raw bytes below
            pass
    return {TAG: 'ndarray_bytes', 'shape': list(obj.shape),
            'dtype': obj.dtype.str,
            'data': torch.frombuffer(bytearray(
                np.ascontiguousarray(obj).tobytes()) or bytearray(1),
                dtype=torch.uint8)[:obj.nbytes].clone()}


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        tag = obj.get(TAG)
        if tag is not None:
            if tag not in _DECODERS:
                raise ValueError(f'unknown {TAG} tag {tag!r} (a file from '
                                 'a newer mmbcn?)')
            return _DECODERS[tag](obj)
        items = {k: decode(v) for k, v in obj.items()}
        return OrderedDict(items) if isinstance(obj, OrderedDict) else items
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if type(obj) is tuple:  # a torch.Size is stored as it is
        return tuple(decode(v) for v in obj)
    return obj


def _decode_enum(obj):
    """The enum member if its class is already imported (nothing is
    imported because a checkpoint names it), else its value."""
    cls = sys.modules.get(obj['module'])
    for part in obj['class'].split('.'):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, enum.Enum) and \
            obj['name'] in cls.__members__:
        return cls[obj['name']]
    return decode(obj['value'])


def _decode_dict(obj):
    items = zip((decode(k) for k in obj['keys']),
                (decode(v) for v in obj['values']))
    return OrderedDict(items) if obj['ordered'] else dict(items)


def _decode_bytes_array(obj):
    raw = obj['data'].numpy().tobytes()
    return np.frombuffer(raw, dtype=np.dtype(obj['dtype'])).reshape(
        obj['shape']).copy()


def _decode_object_array(obj):
    items = [decode(v) for v in obj['items']]
    if 'shape' not in obj:  # files written before the shape was stored
        return np.array(items, dtype=object)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(obj.get('shape', [len(items)]))


def _decode_old_scalar(obj):  # files written before numpy_scalar_array
    return np.dtype(obj['dtype']).type(obj['value'])


_DECODERS = {
    'HistoryBuffer': lambda o: HistoryBuffer(
        o['log_history'].numpy().tolist(),
        o['count_history'].numpy().tolist(), o['max_length']),
    'ndarray': lambda o: o['data'].numpy().astype(np.dtype(o['dtype'])),
    'ndarray_bytes': _decode_bytes_array,
    'object_ndarray': _decode_object_array,
    'numpy_scalar_array': lambda o: decode(o['array'])[()],
    'numpy_scalar': _decode_old_scalar,
    'numpy_dtype': lambda o: np.dtype(o['dtype']),
    'Counter': lambda o: Counter(decode(o['items'])),
    'Enum': _decode_enum,
    'Path': lambda o: _PATHS.get(o['class'], pathlib.Path)(o['path']),
    'timedelta': lambda o: datetime.timedelta(
        o['days'], o['seconds'], o['microseconds']),
    'datetime': lambda o: datetime.datetime.fromisoformat(o['iso']),
    'date': lambda o: datetime.date.fromisoformat(o['iso']),
    'time': lambda o: datetime.time.fromisoformat(o['iso']),
    'set': lambda o: {decode(v) for v in o['items']},
    'frozenset': lambda o: frozenset(decode(v) for v in o['items']),
    'dict': _decode_dict,
}
