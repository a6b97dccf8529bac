# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization as one op with backends.

Imports with torch alone (and Triton where present): no OpenMMLab package,
so the op can be used and benchmarked anywhere torch runs.

    from mmbcn.ops import batch_channel_norm, set_backend
"""
from .backends import (BACKENDS, Backend, BackendError, describe, get_backend,
                       register_backend, set_backend)
from .batch_channel_norm import batch_channel_norm
from .call import BATCH, ESTIMATE, FIXED, MODES
from .layers import BatchChannelNorm, SyncBatchChannelNorm
from .ws_conv import WSConv2d, standardize_weight

__all__ = [
    'WSConv2d', 'standardize_weight',
    'BatchChannelNorm', 'SyncBatchChannelNorm', 'batch_channel_norm',
    'set_backend', 'get_backend', 'describe', 'register_backend', 'Backend',
    'BackendError', 'BACKENDS', 'FIXED', 'BATCH', 'ESTIMATE', 'MODES'
]
