# Copyright (c) mmbcn contributors. All rights reserved.
"""The 4-layer convolutional network of the paper's Fig. 1 experiment
(Sec. 2.2): four blocks of 3x3 conv (32 channels) -> norm -> ReLU (Eq. 4)
-> 2x2 average pooling, then global average pooling and a fully-connected
layer to the class logits."""
from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import Tensor, nn


class FourLayerConvNet(nn.Module):
    """Args:
        in_channels (int): Image channels (3 for CIFAR-10, 1 for digits).
        num_classes (int): Default 10.
        norm_cfg (dict): Norm of every block, e.g.
            ``dict(type='FixedStatNorm', sigma_mu=1.0, sigma_sigma=0.5)``
            (from ``mmbcn.analysis``) or ``dict(type='BN')``.
        conv_cfg (dict | None): Conv of every block (None: ``nn.Conv2d``).
        width (int): Channels per conv layer. Default 32.
        num_layers (int): Conv blocks; the input side must be divisible by
            2**num_layers. Default 4.
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 10,
                 norm_cfg: dict = dict(type='BN'),
                 conv_cfg=None,
                 width: int = 32,
                 num_layers: int = 4):
        super().__init__()
        blocks = []
        channels = in_channels
        for _ in range(num_layers):
            blocks += [
                build_conv_layer(
                    conv_cfg, channels, width, 3, padding=1, bias=False),
                build_norm_layer(norm_cfg, width)[1],
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
