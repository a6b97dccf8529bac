# Copyright (c) mmbcn contributors. All rights reserved.
"""The ASPP head of the authors' DeepLabV3 PASCAL VOC model:
``BCNASPPHead``."""
import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.aspp_head import ASPPModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class BCNASPPHead(BaseDecodeHead):
    """DeepLabV3's ASPP head as the authors' released BCN+WS VOC model
    computes it.

    For an input x (N, in_channels, H, W), each branch ends in the norm
    layer and ReLU; module names in brackets are the authors' (``aspp.*``)::

        aspp_modules.0   1x1 conv                           [aspp1, aspp1_bn]
        aspp_modules.1-3 3x3 conv, dilation 6 / 12 / 18     [aspp2-4, ..._bn]
        image_pool       global average pool -> 1x1 conv    [aspp5, aspp5_bn]
                         -> upsampled to (H, W)
        concatenated in this order (5 * channels)
        bottleneck       1x1 conv                           [conv2, bn2]
        conv_seg         1x1 conv with bias, plain Conv2d   [conv3]

    The segmentor upsamples the logits to the input size. Upsampling uses
    ``align_corners`` (True for the authors' model).

    It differs from mmseg's ``ASPPHead`` in three places: the pooled branch
    comes last in the concatenation, the bottleneck is 1x1 (not 3x3), and
    there is no dropout by default.

    Args:
        dilations (tuple[int]): Dilations of the ``aspp_modules`` (1 gives
            a 1x1 conv). Default (1, 6, 12, 18).
        dropout_ratio (float): Dropout before ``conv_seg``. Default 0.
        align_corners (bool): Default True.
        Other arguments as :class:`mmseg.models.decode_heads.BaseDecodeHead`.
    """

    def __init__(self,
                 dilations=(1, 6, 12, 18),
                 dropout_ratio=0.0,
                 align_corners=True,
                 **kwargs):
        super().__init__(
            dropout_ratio=dropout_ratio, align_corners=align_corners, **kwargs)
        self.dilations = tuple(dilations)
        branch = dict(
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        self.aspp_modules = ASPPModule(self.dilations, self.in_channels,
                                       self.channels, **branch)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvModule(self.in_channels, self.channels, 1, **branch))
        self.bottleneck = ConvModule((len(self.dilations) + 1) * self.channels,
                                     self.channels, 1, **branch)

    def _forward_feature(self, inputs):
        x = self._transform_inputs(inputs)
        pooled = resize(
            self.image_pool(x),
            size=x.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        return self.bottleneck(
            torch.cat(self.aspp_modules(x) + [pooled], dim=1))

    def forward(self, inputs):
        return self.cls_seg(self._forward_feature(inputs))
