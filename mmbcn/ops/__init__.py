# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization as one op with backends.

Imports with torch alone (and Triton where present): no OpenMMLab package,
so the op can be used and benchmarked anywhere torch runs.

    from mmbcn.ops import batch_channel_norm, set_backend
"""
from . import cpu_backend, python_backend, triton_backend
from .backends import (BACKENDS, Backend, BackendError, describe, get_backend,
                       register_backend, set_backend)
from .batch_channel_norm import batch_channel_norm
from .call import BATCH, ESTIMATE, FIXED, MODES
from .layers import BatchChannelNorm, SyncBatchChannelNorm
from .ws_conv import WSConv2d, standardize_weight

register_backend(
    Backend('python', python_backend.forward, devices=('cpu', 'cuda',
                                                       'mps', 'xpu')))
register_backend(
    Backend('cpu', cpu_backend.forward, devices=('cpu', ),
            dtypes=(cpu_backend.torch.float32, cpu_backend.torch.float64),
            layouts='contiguous', synchronized=False, same_dtype=True,
            unavailable=cpu_backend.unavailable, refuse=cpu_backend.refuse))
register_backend(
    Backend('triton', triton_backend.forward, devices=('cpu', 'cuda'),
            layouts='contiguous, channels_last', synchronized=True,
            unavailable=triton_backend.unavailable,
            refuse=triton_backend.refuse))

__all__ = [
    'WSConv2d', 'standardize_weight',
    'BatchChannelNorm', 'SyncBatchChannelNorm', 'batch_channel_norm',
    'set_backend', 'get_backend', 'describe', 'register_backend', 'Backend',
    'BackendError', 'BACKENDS', 'FIXED', 'BATCH', 'ESTIMATE', 'MODES'
]
