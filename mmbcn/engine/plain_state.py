# Copyright (c) mmbcn contributors. All rights reserved.
"""Encode checkpoint state as data that ``torch.load(weights_only=True)``
accepts, and decode it back.

mmengine 0.10 stores numpy arrays and scalars, numpy dtypes,
``collections.Counter`` and ``HistoryBuffer`` objects (whose pickled form
calls ``builtins.getattr``) in its checkpoints. Each is written as a tagged
dict of tensors and Python primitives; anything else that is not plain data
raises an error naming where it sits, so nothing is silently dropped.
"""
from collections import Counter, OrderedDict
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

TAG = '__mmbcn_plain__'
_PRIMITIVES = (str, int, float, bool, complex, type(None), torch.Tensor,
               torch.Size, torch.dtype, torch.device)


def encode(obj: Any, where: str = 'checkpoint') -> Any:
    """Plain-data form of ``obj`` (a new object; ``obj`` is not changed)."""
    if isinstance(obj, HistoryBuffer):
        return {
            TAG: 'HistoryBuffer',
            'log_history': torch.as_tensor(obj._log_history),
            'count_history': torch.as_tensor(obj._count_history),
            'max_length': obj.max_length,
        }
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {TAG: 'object_ndarray',
                    'items': [encode(v, f'{where}[]') for v in obj.tolist()]}
        return {TAG: 'ndarray', 'data': torch.from_numpy(obj.copy()),
                'dtype': obj.dtype.str}
    if isinstance(obj, np.generic):
        return {TAG: 'numpy_scalar', 'value': obj.item(),
                'dtype': obj.dtype.str}
    if isinstance(obj, np.dtype):
        return {TAG: 'numpy_dtype', 'dtype': obj.str}
    if isinstance(obj, Counter):
        return {TAG: 'Counter', 'items': encode(dict(obj), where)}
    if isinstance(obj, _PRIMITIVES):
        return obj
    if isinstance(obj, dict):
        items = {k: encode(v, f'{where}[{k!r}]') for k, v in obj.items()}
        return OrderedDict(items) if isinstance(obj, OrderedDict) else items
    if isinstance(obj, (list, tuple)):
        items = [encode(v, f'{where}[{i}]') for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f'{where} holds a {type(obj).__module__}.'
                    f'{type(obj).__qualname__}, which a weights_only '
                    'checkpoint cannot store')


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        tag = obj.get(TAG)
        if tag == 'HistoryBuffer':
            return HistoryBuffer(obj['log_history'].numpy().tolist(),
                                 obj['count_history'].numpy().tolist(),
                                 obj['max_length'])
        if tag == 'ndarray':
            return obj['data'].numpy().astype(np.dtype(obj['dtype']))
        if tag == 'object_ndarray':
            return np.array([decode(v) for v in obj['items']], dtype=object)
        if tag == 'numpy_scalar':
            return np.dtype(obj['dtype']).type(obj['value'])
        if tag == 'numpy_dtype':
            return np.dtype(obj['dtype'])
        if tag == 'Counter':
            return Counter(decode(obj['items']))
        items = {k: decode(v) for k, v in obj.items()}
        return OrderedDict(items) if isinstance(obj, OrderedDict) else items
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(decode(v) for v in obj)
    return obj
