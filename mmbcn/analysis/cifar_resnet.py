# Copyright (c) mmbcn contributors. All rights reserved.
"""CIFAR-style ResNet (He et al., Sec. 4.2), the model of the paper's
Fig. 3 (ResNet-110): a 3x3 stem of 16 channels, three stages of n basic
blocks at 16, 32 and 64 channels (strides 1, 2, 2), global average pooling
and a fully-connected layer; depth = 6n + 2 (8, 14, 20, ..., 110).
Projection shortcuts (1x1 conv + norm) where the shape changes.

Norms and convs come from the OpenMMLab registries (``norm_cfg``,
``conv_cfg``); GN and BCN without ``num_groups`` get min(32, C / 4) groups,
the paper's CIFAR setting.
"""
from typing import Optional

from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import Tensor, nn

GROUPED_NORMS = ('GN', 'BCN', 'SyncBCN')


def build_cifar_norm(norm_cfg: dict, channels: int) -> nn.Module:
    """``build_norm_layer``, with min(32, C / 4) groups for a grouped norm
    whose config names none."""
    cfg = dict(norm_cfg)
    if cfg['type'] in GROUPED_NORMS and cfg.get('num_groups') is None:
        cfg['num_groups'] = min(32, max(1, channels // 4))
    return build_norm_layer(cfg, channels)[1]


class BasicBlock(nn.Module):

    def __init__(self, in_channels: int, channels: int, stride: int,
                 conv_cfg: Optional[dict], norm_cfg: dict):
        super().__init__()
        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, channels, 3, stride, 1, bias=False)
        self.norm1 = build_cifar_norm(norm_cfg, channels)
        self.conv2 = build_conv_layer(
            conv_cfg, channels, channels, 3, 1, 1, bias=False)
        self.norm2 = build_cifar_norm(norm_cfg, channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                build_conv_layer(
                    conv_cfg, in_channels, channels, 1, stride, bias=False),
                build_cifar_norm(norm_cfg, channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Args:
        depth (int): 6n + 2. Default 8.
        in_channels (int): Image channels. Default 3.
        num_classes (int): Default 10.
        norm_cfg (dict): e.g. ``dict(type='GN')``, ``dict(type='GN',
            num_groups=1)`` (LN), ``dict(type='BCN')``. Default GN.
        conv_cfg (dict | None): e.g. ``dict(type='WSConv')``. Default None
            (``nn.Conv2d``).
        base_width (int): Channels of the first stage. Default 16.
    """

    def __init__(self,
                 depth: int = 8,
                 in_channels: int = 3,
                 num_classes: int = 10,
                 norm_cfg: dict = dict(type='GN'),
                 conv_cfg: Optional[dict] = None,
                 base_width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f'CIFAR ResNet depth must be 6n + 2 with n >= 1 '
                             f'(8, 14, 20, ..., 110), got {depth}')
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            build_conv_layer(
                conv_cfg, in_channels, base_width, 3, 1, 1, bias=False),
            build_cifar_norm(norm_cfg, base_width), nn.ReLU(inplace=True))
        blocks = []
        channels = base_width
        for stage in range(3):
            width = base_width * 2**stage
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    BasicBlock(channels, width, stride, conv_cfg, norm_cfg))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
