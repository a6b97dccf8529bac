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


class PlainStateError(ValueError):
    """A checkpoint's plain-data encoding cannot be decoded: an entry is
    malformed (the file was damaged or edited), of a newer format, or
    nested deeper than any checkpoint mmbcn or mmengine writes."""


# mmengine's checkpoints nest a few levels (meta -> message_hub ->
# log_scalars -> buffer -> tag); far below Python's recursion limit.
MAX_DEPTH = 100


def decode(obj: Any, where: str = 'checkpoint') -> Any:
    """Inverse of :func:`encode`.

    Raises:
        PlainStateError: an entry tagged ``__mmbcn_plain__`` is malformed or
            unknown, or ``obj`` is nested more than :data:`MAX_DEPTH`
            levels; the message names where (``checkpoint['meta'][0]``).
    """
    return _decode(obj, where, 0)


def _decode(obj: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PlainStateError(
            f'{where}: nested more than {MAX_DEPTH} levels deep, which no '
            'checkpoint of mmbcn or mmengine is (a damaged or crafted '
            'file)')
    if isinstance(obj, dict):
        tag = obj.get(TAG)
        if tag is not None:
            return _decode_tagged(obj, tag, where, depth)
        items = {k: _decode(v, f'{where}[{_short(k)}]', depth + 1)
                 for k, v in obj.items()}
        return OrderedDict(items) if isinstance(obj, OrderedDict) else items
    if isinstance(obj, list):
        return [_decode(v, f'{where}[{i}]', depth + 1)
                for i, v in enumerate(obj)]
    if type(obj) is tuple:  # a torch.Size is stored as it is
        return tuple(_decode(v, f'{where}[{i}]', depth + 1)
                     for i, v in enumerate(obj))
    return obj


def _short(key) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + '...'


def _decode_tagged(obj: dict, tag, where: str, depth: int):
    if not isinstance(tag, str) or tag not in _DECODERS:
        raise PlainStateError(
            f'{where}: unknown {TAG} tag {_short(tag)} (a file from a newer '
            'mmbcn, or a damaged one)')

    def child(value, suffix):
        return _decode(value, where + suffix, depth + 1)

    try:
        return _DECODERS[tag](obj, child)
    except PlainStateError:
        raise
    except Exception as err:  # a missing field, a wrong type or value
        raise PlainStateError(
            f'{where}: malformed {TAG} entry {tag!r} '
            f'({type(err).__name__}: {err}): the file was damaged or edited'
        ) from err


def _tensor(value, field: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"'{field}' is a {type(value).__name__}, not a "
                        'tensor')
    return value


def _decode_enum(obj, child):
    """The enum member if its class is already imported (nothing is
    imported because a checkpoint names it), else its value."""
    module, qualname, name = (_text(obj, key)
                              for key in ('module', 'class', 'name'))
    cls = sys.modules.get(module)
    for part in qualname.split('.'):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, enum.Enum) and \
            name in cls.__members__:
        return cls[name]
    return child(obj['value'], '.value')


def _text(obj, key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"'{key}' is a {type(value).__name__}, not a str")
    return value


def _decode_dict(obj, child):
    keys, values = obj['keys'], obj['values']
    if not (isinstance(keys, list) and isinstance(values, list)
            and len(keys) == len(values)):
        raise ValueError("'keys' and 'values' must be lists of one length")
    items = zip((child(k, ' key') for k in keys),
                (child(v, f'[{i}]') for i, v in enumerate(values)))
    return OrderedDict(items) if obj['ordered'] else dict(items)


def _decode_bytes_array(obj, child):
    raw = _tensor(obj['data'], 'data').numpy().tobytes()
    return np.frombuffer(raw, dtype=np.dtype(_text(obj, 'dtype'))).reshape(
        obj['shape']).copy()


def _decode_object_array(obj, child):
    items = [child(v, f'[{i}]') for i, v in enumerate(obj['items'])]
    if 'shape' not in obj:  # files written before the shape was stored
        return np.array(items, dtype=object)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(obj['shape'])


def _decode_old_scalar(obj, child):  # before numpy_scalar_array
    return np.dtype(_text(obj, 'dtype')).type(obj['value'])


def _decode_history(obj, child):
    return HistoryBuffer(
        _tensor(obj['log_history'], 'log_history').numpy().tolist(),
        _tensor(obj['count_history'], 'count_history').numpy().tolist(),
        obj['max_length'])


def _decode_ndarray(obj, child):
    return _tensor(obj['data'], 'data').numpy().astype(
        np.dtype(_text(obj, 'dtype')))


def _decode_scalar_array(obj, child):
    array = child(obj['array'], '.array')
    if not isinstance(array, np.ndarray):
        raise TypeError(f"'array' decodes to a {type(array).__name__}")
    return array[()]


def _decode_set(obj, child, kind=set):
    return kind(child(v, '{}') for v in obj['items'])


def _decode_counter(obj, child):
    items = child(obj['items'], '.items')
    if not isinstance(items, dict):
        raise TypeError(f"'items' decodes to a {type(items).__name__}")
    return Counter(items)


def _decode_path(obj, child):
    return _PATHS.get(obj['class'], pathlib.Path)(_text(obj, 'path'))


def _decode_timedelta(obj, child):
    return datetime.timedelta(obj['days'], obj['seconds'],
                              obj['microseconds'])


def _decode_time(kind):
    return lambda obj, child: kind.fromisoformat(_text(obj, 'iso'))


_DECODERS = {
    'HistoryBuffer': _decode_history,
    'ndarray': _decode_ndarray,
    'ndarray_bytes': _decode_bytes_array,
    'object_ndarray': _decode_object_array,
    'numpy_scalar_array': _decode_scalar_array,
    'numpy_scalar': _decode_old_scalar,
    'numpy_dtype': lambda o, child: np.dtype(_text(o, 'dtype')),
    'Counter': _decode_counter,
    'Enum': _decode_enum,
    'Path': _decode_path,
    'timedelta': _decode_timedelta,
    'datetime': _decode_time(datetime.datetime),
    'date': _decode_time(datetime.date),
    'time': _decode_time(datetime.time),
    'set': _decode_set,
    'frozenset': lambda o, child: _decode_set(o, child, frozenset),
    'dict': _decode_dict,
}
