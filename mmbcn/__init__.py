# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization and Weight Standardization for OpenMMLab.

``import mmbcn`` (or ``custom_imports=dict(imports=['mmbcn'])`` in a config)
registers into the registries that mmcv, mmdet and mmseg build from:

* the layers ``BCN``, ``SyncBCN`` and ``WSConv``;
* the hooks ``BCNUpdateRateHook``, ``WeightsOnlyCheckpointHook``,
  ``SafeCheckpointHook`` and ``SingularityHook``, the CPU model wrapper and
  the weights-only checkpoint loaders.

It imports neither mmdet nor mmseg, nor the analysis experiments
(:mod:`mmbcn.analysis`). What needs mmdet or mmseg is registered by the
module a config names beside ``mmbcn`` in ``custom_imports``:

* ``mmbcn.datasets.coco_demo``: ``ShapesCocoDataset`` (mmdet), the bundled
  detection demo data;
* ``mmbcn.datasets.voc_demo``: ``VOCShapesDataset`` and the
  ``CheckSegMapSize`` transform (mmseg);
* ``mmbcn.models``: ``BCNASPPHead``, the authors' DeepLabV3 head (mmseg).

For example ``custom_imports = dict(imports=['mmbcn',
'mmbcn.datasets.voc_demo'], allow_failed_imports=False)``.

The layers and the op, :mod:`mmbcn.ops` (``BatchChannelNorm``,
``SyncBatchChannelNorm``, ``WSConv2d``, ``batch_channel_norm`` and its
backends), need only torch: where mmengine is not installed (a bare GPU
machine for benchmarks), ``import mmbcn`` and ``import mmbcn.ops`` work and
nothing is registered.
"""
from .ops import (BatchChannelNorm, SyncBatchChannelNorm, WSConv2d,
                  standardize_weight)
from .version import __version__

__all__ = [
    'BatchChannelNorm', 'SyncBatchChannelNorm', 'WSConv2d',
    'standardize_weight', '__version__'
]

try:
    import mmengine  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != 'mmengine':
        raise
else:
    from . import cnn  # noqa: F401  (registers BCN, SyncBCN, WSConv)
    from .engine import BCNUpdateRateHook
    # filters mmengine's pkg_resources warning before any config is loaded
    from .utils import quiet_imports  # noqa: F401

    __all__ += ['BCNUpdateRateHook']
