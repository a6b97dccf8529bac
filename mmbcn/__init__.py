# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization and Weight Standardization for OpenMMLab.

``import mmbcn`` (or ``custom_imports=dict(imports=['mmbcn'])`` in a config)
registers ``BCN``, ``SyncBCN``, ``WSConv`` and ``BCNUpdateRateHook`` into the
registries that mmcv, mmdet and mmseg build from.

The op alone, :mod:`mmbcn.ops` (``batch_channel_norm`` and its backends),
needs only torch: where mmengine is not installed (a bare GPU machine for
benchmarks), ``import mmbcn.ops`` works and nothing is registered.
"""
from .version import __version__

try:
    import mmengine  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != 'mmengine':
        raise
    __all__ = ['__version__']
else:
    from . import datasets  # noqa: F401  (registers the demo datasets)
    from . import models  # noqa: F401  (registers BCNASPPHead in mmseg)
    from .cnn import (BatchChannelNorm, SyncBatchChannelNorm, WSConv2d,
                      standardize_weight)
    from .engine import BCNUpdateRateHook

    __all__ = [
        'BatchChannelNorm', 'SyncBatchChannelNorm', 'WSConv2d',
        'standardize_weight', 'BCNUpdateRateHook', '__version__'
    ]
