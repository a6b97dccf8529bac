# Copyright (c) mmbcn contributors. All rights reserved.
from ..ops.moment_affine import bcn_coefficients, channel_moments
from .bcn import BatchChannelNorm, SyncBatchChannelNorm
from .ws_conv import WSConv2d, standardize_weight

__all__ = [
    'BatchChannelNorm', 'SyncBatchChannelNorm', 'WSConv2d',
    'bcn_coefficients', 'channel_moments', 'standardize_weight'
]
