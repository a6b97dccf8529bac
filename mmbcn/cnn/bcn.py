# Copyright (c) mmbcn contributors. All rights reserved.
"""``BCN`` and ``SyncBCN`` in the registry that mmcv's ``build_norm_layer``,
mmdet and mmseg build norm layers from. The layers themselves need torch
alone and live in :mod:`mmbcn.ops.layers`."""
from mmengine.registry import MODELS

from ..ops.layers import BatchChannelNorm, SyncBatchChannelNorm

MODELS.register_module('BCN', module=BatchChannelNorm)
MODELS.register_module('SyncBCN', module=SyncBatchChannelNorm)

__all__ = ['BatchChannelNorm', 'SyncBatchChannelNorm']
