# Copyright (c) mmbcn contributors. All rights reserved.
"""Bundled demo data: a small COCO-format instance segmentation dataset of
coloured shapes, generated deterministically on first use.

Each 256x256 image has a plain dark background and 1-3 bright squares,
circles and triangles of varied sizes, colours and rotations that may
overlap; later shapes occlude earlier ones, and each instance's mask, box
and area describe what stays visible (masks stored as COCO RLE). The set is
easy on purpose: Mask R-CNN learns it from scratch, one image per
iteration, in a few hundred CPU iterations (docs/demo.md). Layout under
``data_root``::

    annotations/instances_{train,val}.json
    train/*.jpg   val/*.jpg

Each annotation file's ``info.version`` is :data:`GENERATOR_VERSION`; data
written by another version of the generator, or a file that is not COCO
(missing ``images``/``annotations``/``categories``, a ``bbox`` that is not
4 numbers, ...), is refused with the file, the annotation and the image.
Annotations that mmdet would drop without a word (an unknown
``category_id``, polygons of fewer than 6 coordinates) are counted and
reported once per dataset.
"""
import json
import logging
import os
import os.path as osp
import shutil
import tempfile
import warnings
from typing import Dict, List, Optional

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log
from pycocotools import mask as mask_utils

from .coco_checks import (coco_structure_problem, dropped_annotations,
                          dropped_message)

CLASSES = ('square', 'circle', 'triangle')
SPLITS = {'train': (240, 0), 'val': (48, 1)}  # (images, seed)
IMAGE_SIZE = 256
MAX_SHAPES = 3
MIN_VISIBLE_AREA = 40
# Version 1 drew 1-5 shapes on textured backgrounds, 160-256 px images.
GENERATOR_VERSION = 2


def _draw(shape, rng, h, w):
    """A filled shape's mask (uint8 0/1) at a random place and size."""
    size = int(rng.uniform(0.12, 0.42) * min(h, w))
    cx = int(rng.uniform(size / 2, w - size / 2))
    cy = int(rng.uniform(size / 2, h - size / 2))
    mask = np.zeros((h, w), np.uint8)
    if shape == 'circle':
        cv2.circle(mask, (cx, cy), size // 2, 1, -1)
    else:
        n = 4 if shape == 'square' else 3
        angle = rng.uniform(0, 2 * np.pi)
        radius = size / 2 * (np.sqrt(2) if n == 4 else 1.15)
        pts = [(cx + radius * np.cos(angle + 2 * np.pi * k / n),
                cy + radius * np.sin(angle + 2 * np.pi * k / n))
               for k in range(n)]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _image(rng):
    h = w = IMAGE_SIZE
    img = np.empty((h, w, 3), np.float32)
    img[...] = rng.uniform(0, 80, size=3)  # dark background
    shapes = []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        label = int(rng.integers(len(CLASSES)))
        mask = _draw(CLASSES[label], rng, h, w)
        colour = rng.uniform(120, 255, size=3)  # bright shapes
        img = np.where(mask[..., None] > 0, colour, img)
        for _, earlier in shapes:  # occlusion by the new shape
            earlier &= 1 - mask
        shapes.append((label, mask))
    return np.clip(img, 0, 255).astype(np.uint8), shapes


def _annotations(shapes, image_id, next_id) -> List[Dict]:
    anns = []
    for label, mask in shapes:
        area = int(mask.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        rle = mask_utils.encode(np.asfortranarray(mask))
        x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
        rle['counts'] = rle['counts'].decode('ascii')
        anns.append(dict(id=next_id + len(anns), image_id=image_id,
                         category_id=label + 1, segmentation=rle,
                         area=area, bbox=[x, y, bw, bh], iscrowd=0))
    return anns


def generate_shapes_coco(root: str, sizes: Optional[Dict[str, int]] = None
                         ) -> None:
    """Write the dataset to ``root`` (deterministic: same bytes each time).

    ``sizes`` overrides the number of images per split (a split's first
    images are the same whatever its size)."""
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    for split, (count, seed) in SPLITS.items():
        count = (sizes or {}).get(split, count)
        os.makedirs(osp.join(root, split), exist_ok=True)
        rng = np.random.default_rng(seed)
        images, anns = [], []
        for i in range(count):
            img, shapes = _image(rng)
            name = f'{split}_{i:04d}.jpg'
            cv2.imwrite(osp.join(root, split, name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=i + 1, file_name=name,
                               height=img.shape[0], width=img.shape[1]))
            anns += _annotations(shapes, i + 1, len(anns) + 1)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'),
                  'w') as f:
            json.dump(dict(info=dict(description='mmbcn shapes demo',
                                     version=GENERATOR_VERSION),
                           images=images, annotations=anns,
                           categories=categories), f)


@DATASETS.register_module()
class ShapesCocoDataset(CocoDataset):
    """COCO-format shapes dataset, generated under ``data_root`` on first
    use (``tools/train.py`` and ``tools/test.py`` call
    :meth:`ensure_data`; so does building the dataset)."""

    METAINFO = dict(classes=CLASSES,
                    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75)])
    # it reports what mmdet drops itself, from the file it has read
    # (tools/train.py and tools/test.py do it for other COCO datasets)
    reports_dropped_annotations = True

    def __init__(self, *args, data_root: str = '', **kwargs):
        if data_root:
            self.ensure_data(data_root)
        super().__init__(*args, data_root=data_root, **kwargs)

    @classmethod
    def ensure_data(cls, data_root: str) -> None:
        """Generate the data into ``data_root`` unless it is there. Safe
        when several processes start at once: each writes a private copy
        and the first rename wins.

        Raises:
            RuntimeError: ``data_root`` exists and holds something else, an
                annotation file is not valid JSON (truncated), or the data
                was written by another version of the generator; the
                message names the path and what to do.
        """
        root = osp.normpath(data_root)
        if not osp.isfile(osp.join(root, 'annotations', 'instances_val.json')):
            cls._generate(data_root, root)
        for split in SPLITS:
            check_annotation_file(
                osp.join(root, 'annotations', f'instances_{split}.json'),
                data_root)

    @staticmethod
    def _generate(data_root: str, root: str) -> None:
        if osp.exists(root) and not (osp.isdir(root) and not os.listdir(root)):
            raise RuntimeError(
                f'data_root {data_root!r} exists but does not hold the demo '
                'dataset (annotations/instances_val.json is missing): remove '
                'it, or set data_root to a new directory where the demo data '
                'can be generated')
        parent = osp.dirname(osp.abspath(root))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.shapes-', dir=parent)
        try:
            generate_shapes_coco(tmp)
            try:
                os.rename(tmp, root)
            except OSError as err:
                if not osp.isfile(
                        osp.join(root, 'annotations', 'instances_val.json')):
                    raise RuntimeError(
                        f'data_root {data_root!r} exists but does not hold '
                        'the demo dataset (annotations/instances_val.json '
                        f'is missing; {err.strerror}): remove it, or set '
                        'data_root to a new directory where the demo data '
                        'can be generated') from err
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_data_list(self):
        content = check_annotation_file(self.ann_file, self.data_root)
        if content is not None:
            self.dropped = dropped_annotations(content,
                                               self.metainfo['classes'])
            self._report_dropped()
        return super().load_data_list()

    def _report_dropped(self) -> None:
        """Warn once per dataset about what mmdet will drop."""
        message = dropped_message(self.ann_file, self.dropped,
                                  self.metainfo['classes'])
        if message:
            warnings.warn(message, stacklevel=2)
            print_log(message, logger='current', level=logging.WARNING)


def check_annotation_file(path: str, data_root: str) -> Optional[dict]:
    """Raise a RuntimeError naming ``path`` if it is not valid JSON, not a
    COCO instances file (``images``, ``annotations``, ``categories``
    lists; each annotation with an image, a category id, a 4-number
    ``bbox``, a polygon list or an RLE ``segmentation``), or was written by
    another version of the generator. Returns the parsed file (None if
    ``path`` does not exist)."""
    if not osp.isfile(path):
        return None  # a missing file is reported by whoever reads it
    regenerate = (f'Delete the data_root {data_root!r} to have the demo '
                  'data generated again')
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise RuntimeError(
            f'annotation file {path!r} is not valid JSON ({err}): it is '
            f'truncated or damaged. {regenerate}') from err
    problem = coco_structure_problem(content)
    if problem:
        raise RuntimeError(f'annotation file {path!r}: {problem}. '
                           f'{regenerate}')
    info = content.get('info')
    if not isinstance(info, dict) or 'version' not in info:
        raise RuntimeError(
            f'annotation file {path!r} has no info.version, so it was not '
            f'written by this shapes demo generator (version '
            f'{GENERATOR_VERSION}): it comes from version 1 of the generator '
            '(which wrote none) or is other COCO data (use mmdet\'s '
            f'CocoDataset for that). {regenerate}')
    if info['version'] != GENERATOR_VERSION:
        raise RuntimeError(
            f'annotation file {path!r} was written by version '
            f'{info["version"]!r} of the shapes demo generator; this mmbcn '
            f'writes version {GENERATOR_VERSION} (other images, other '
            f'results). {regenerate}')
    return content
