# Copyright (c) mmbcn contributors. All rights reserved.
"""Registration only: mmbcn's layers under the names that configs use, in
the registry that mmcv's ``build_norm_layer`` / ``build_conv_layer``,
mmdet and mmseg build from (mmengine's root ``MODELS``; mmdet's and mmseg's
registries look names up there too):

* ``BCN``, ``SyncBCN``: ``norm_cfg=dict(type='BCN', ...)``;
* ``WSConv``: ``conv_cfg=dict(type='WSConv', ...)``.

The layers need torch alone; import them from :mod:`mmbcn.ops`::

    from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d

mmcv builds a conv layer by calling the registered class with
``nn.Conv2d``'s arguments and the config's other keys, which
:class:`~mmbcn.ops.WSConv2d` accepts as it is: no mmcv subclass is needed.
"""
from mmengine.registry import MODELS

from ..ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d

NORM_LAYERS = {'BCN': BatchChannelNorm, 'SyncBCN': SyncBatchChannelNorm}
CONV_LAYERS = {'WSConv': WSConv2d}
for _name, _layer in {**NORM_LAYERS, **CONV_LAYERS}.items():
    MODELS.register_module(_name, module=_layer)

__all__ = ['NORM_LAYERS', 'CONV_LAYERS']
