# Copyright (c) mmbcn contributors. All rights reserved.
from .coco_demo import ShapesCocoDataset, generate_shapes_coco
from .voc_demo import (CheckSegMapSize, VOCShapesDataset, generate_voc_shapes,
                       prepare_voc_shapes)

__all__ = [
    'ShapesCocoDataset', 'generate_shapes_coco', 'CheckSegMapSize',
    'VOCShapesDataset', 'generate_voc_shapes', 'prepare_voc_shapes'
]
