# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization and Weight Standardization for OpenMMLab.

``import mmbcn`` (or ``custom_imports=dict(imports=['mmbcn'])`` in a config)
registers ``BCN``, ``SyncBCN``, ``WSConv`` and ``BCNUpdateRateHook`` into the
registries that mmcv, mmdet and mmseg build from.
"""
from .cnn import (BatchChannelNorm, SyncBatchChannelNorm, WSConv2d,
                  standardize_weight)
from .engine import BCNUpdateRateHook
from . import datasets  # noqa: F401  (registers the demo datasets)
from . import models  # noqa: F401  (registers BCNASPPHead in mmseg)
from .version import __version__

__all__ = [
    'BatchChannelNorm', 'SyncBatchChannelNorm', 'WSConv2d',
    'standardize_weight', 'BCNUpdateRateHook', '__version__'
]
