# Copyright (c) mmbcn contributors. All rights reserved.
"""The last step of a classification pipeline: an image and its label as
the inputs of :class:`mmbcn.models.classifiers.BackboneClassifier`."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """``dict(img=HxWxC array, gt_label=int)`` -> ``dict(inputs=CxHxW
    tensor, data_samples=int)``, which mmengine's ``ImgDataPreprocessor``
    batches (normalization, channel order) and passes to the model."""

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'])
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        return dict(inputs=inputs, data_samples=int(results['gt_label']))
