# Copyright (c) mmbcn contributors. All rights reserved.
"""The bundled demo data, one module per codebase:

* :mod:`mmbcn.datasets.coco_demo` (imports mmdet) registers
  ``ShapesCocoDataset`` in mmdet's ``DATASETS``;
* :mod:`mmbcn.datasets.voc_demo` (imports mmseg) registers
  ``VOCShapesDataset`` in mmseg's ``DATASETS`` and the ``CheckSegMapSize``
  transform in its ``TRANSFORMS``;
* :mod:`mmbcn.datasets.shapes_cls` (imports mmdet, whose scenes it
  draws) registers ``ShapesClsDataset`` (the classification set that
  pretrains the demo backbones) and ``PackClsInputs`` in mmengine's root
  ``DATASETS`` and ``TRANSFORMS``, which every codebase falls back to.

``import mmbcn`` imports none of them: a config that uses these names imports
the module in ``custom_imports``, e.g.
``custom_imports = dict(imports=['mmbcn', 'mmbcn.datasets.coco_demo'],
allow_failed_imports=False)``. Importing this package loads none
either; the names below are imported from their module on first use, so
``from mmbcn.datasets import generate_shapes_coco`` imports mmdet alone.
"""
import importlib

_MODULE_OF = {
    'ShapesCocoDataset': 'coco_demo',
    'generate_shapes_coco': 'coco_demo',
    'CheckSegMapSize': 'voc_demo',
    'VOCShapesDataset': 'voc_demo',
    'generate_voc_shapes': 'voc_demo',
    'prepare_voc_shapes': 'voc_demo',
    'ShapesClsDataset': 'shapes_cls',
    'generate_shapes_cls': 'shapes_cls',
    'PackClsInputs': 'pack_cls_inputs',
}

__all__ = list(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'{__name__}.{module}'), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
