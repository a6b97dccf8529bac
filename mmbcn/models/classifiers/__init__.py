# Copyright (c) mmbcn contributors. All rights reserved.
"""Image classification for pretraining backbones (no mmpretrain, which
needs torchvision): ``BackboneClassifier`` in mmengine's ``MODELS`` and
the ``Top1Accuracy`` metric in its ``METRICS``, registered on import.

A config names this module in ``custom_imports``, e.g.
``custom_imports = dict(imports=['mmbcn', 'mmbcn.datasets.shapes_cls',
'mmbcn.models.classifiers'], allow_failed_imports=False)``
(``configs/pretrain/``)."""
from .backbone_classifier import BackboneClassifier
from .top1_accuracy import Top1Accuracy

__all__ = ['BackboneClassifier', 'Top1Accuracy']
