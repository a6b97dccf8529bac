# Copyright (c) mmbcn contributors. All rights reserved.
"""A backbone, global average pooling and a linear layer: the classifier
that pretrains detection backbones (``configs/pretrain/``)."""
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn

from mmbcn.utils import scoped_build


@MODELS.register_module()
class BackboneClassifier(BaseModel):
    """Classify images by a backbone's last feature map, averaged over
    space, then one linear layer; trained with cross-entropy.

    The backbone is built in mmdet's scope (``dict(type='ResNet', ...)`` is
    mmdet's ResNet; ``'mmseg.ResNetV1c'`` names another codebase's), so its
    state dict is the one a detector's ``backbone`` holds: the classifier's
    parameters are ``backbone.*`` and ``head.*``, and a detector loads the
    backbone with ``init_cfg=dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')``.

    Args:
        backbone (dict): The backbone config; its last output is used.
        num_classes (int): Classes.
        in_channels (int, optional): Channels of that output. Default: the
            backbone's ``feat_dim`` (mmdet's and mmseg's ResNets have it).
        data_preprocessor (dict, optional): Batches and normalizes the
            images (e.g. mmengine's ``ImgDataPreprocessor``).
        init_cfg (dict, optional): Initialization of the whole model.

    Inputs are what :class:`mmbcn.datasets.pack_cls_inputs.PackClsInputs`
    packs: images, and the labels (ints) as ``data_samples``. ``mode``:
    ``'loss'`` returns ``loss_cls`` and the batch's ``top1`` (a fraction);
    ``'predict'`` returns one ``dict(pred_label, gt_label, score)`` per
    image (``Top1Accuracy`` reads them); ``'tensor'`` the logits.
    """

    def __init__(self,
                 backbone: dict,
                 num_classes: int,
                 in_channels: Optional[int] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from mmdet.registry import MODELS as DET_MODELS
        self.backbone = scoped_build(backbone, 'mmdet', DET_MODELS)
        if in_channels is None:
            in_channels = getattr(self.backbone, 'feat_dim', None)
            if in_channels is None:
                raise ValueError(
                    f'BackboneClassifier: {type(self.backbone).__name__} has '
                    'no feat_dim: give in_channels (the channels of its last '
                    'output)')
        self.num_classes = num_classes
        self.head = nn.Linear(in_channels, num_classes)

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """(N, in_channels): the last feature map, averaged over space."""
        feats = self.backbone(inputs)
        if isinstance(feats, (list, tuple)):
            feats = feats[-1]
        return feats.mean(dim=(2, 3))

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List[Union[int, Tensor]]] = None,
                mode: str = 'tensor'):
        logits = self.head(self.extract_feat(inputs))
        if mode == 'tensor':
            return logits
        if data_samples is None:
            raise ValueError(f'BackboneClassifier: mode {mode!r} needs the '
                             'labels (data_samples)')
        labels = torch.as_tensor(
            [int(s) for s in data_samples], device=logits.device)
        if mode == 'loss':
            top1 = (logits.detach().argmax(1) == labels).float().mean()
            return dict(loss_cls=F.cross_entropy(logits, labels), top1=top1)
        if mode == 'predict':
            scores = logits.detach().softmax(1)
            return [
                dict(pred_label=int(s.argmax()), gt_label=int(g), score=s)
                for s, g in zip(scores, labels)
            ]
        raise ValueError(f'BackboneClassifier: mode {mode!r} is none of '
                         "'loss', 'predict', 'tensor'")
