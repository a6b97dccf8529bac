# Copyright (c) mmbcn contributors. All rights reserved.
"""Bundled demo data: a small COCO-format instance segmentation dataset of
coloured shapes, generated deterministically on first use, in two variants.

``'easy'`` (the default): each 256x256 image has a plain dark background and
1-3 bright squares, circles and triangles of varied sizes, colours and
rotations. The set is easy on purpose: Mask R-CNN learns it from scratch,
one image per iteration, in a few hundred CPU iterations (docs/demo.md).

``'hard'``: each image is 160-256 px high and 160-256 px wide (drawn
separately) with a textured background (colour gradient, low-frequency
blobs, pixel noise) and 1-5 shapes of any colour (0-255), shaded pixel by
pixel; a second dataset, so that a conclusion of the demo does not rest on
one.

In both, shapes may overlap; later shapes occlude earlier ones, and each
instance's mask, box and area describe what stays visible (masks stored as
COCO RLE). Layout under ``data_root`` (one variant per data root)::

    annotations/instances_{train,val}.json
    train/*.jpg   val/*.jpg

Each annotation file's ``info.version`` is :data:`GENERATOR_VERSION`; data
written by another version of the generator, or a file that is not COCO
(missing ``images``/``annotations``/``categories``, a ``bbox`` that is not
4 numbers, ...), is refused with the file, the annotation and the image.
``info.variant`` names the variant (absent in 'easy' files, which are the
same bytes as before there were variants); a file of another variant than
the dataset's ``variant`` is refused with what to do. Annotations that
mmdet would drop without a word (an unknown ``category_id``, polygons of
fewer than 6 coordinates) are counted and reported once per dataset.
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
IMAGE_SIZE = 256  # 'easy'
MAX_SHAPES = 3  # 'easy'
HARD_SIDES = (160, 256)  # 'hard': each side drawn in this range
HARD_MAX_SHAPES = 5
MIN_VISIBLE_AREA = 40
# Version 1 drew 1-5 shapes on textured backgrounds, 160-256 px images
# (now the 'hard' variant).
GENERATOR_VERSION = 2
VARIANTS = ('easy', 'hard')


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


def _background(rng, h, w):
    """'hard': a colour gradient plus low-frequency blobs and pixel noise
    (float, about 0-255)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-0.25, 0.25, size=(2, 3))
    img = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
    blobs = rng.normal(0, 18, size=(h // 16 + 1, w // 16 + 1, 3))
    img += cv2.resize(blobs.astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, size=(h, w, 3))
    return img


def _add_shapes(rng, img, max_shapes, colours, shaded):
    """Draw 1 to ``max_shapes`` shapes onto ``img`` (float HxWx3), each of
    one colour in ``colours`` (low, high) per channel, times a per-pixel
    factor in [0.85, 1.15] if ``shaded``. Returns the uint8 image and
    [(label, visible mask)]."""
    h, w = img.shape[:2]
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        label = int(rng.integers(len(CLASSES)))
        mask = _draw(CLASSES[label], rng, h, w)
        colour = rng.uniform(*colours, size=3)
        if shaded:
            colour = colour * rng.uniform(0.85, 1.15, size=(h, w, 1))
        img = np.where(mask[..., None] > 0, colour, img)
        for _, earlier in shapes:  # occlusion by the new shape
            earlier &= 1 - mask
        shapes.append((label, mask))
    return np.clip(img, 0, 255).astype(np.uint8), shapes


def _image(rng):
    """An 'easy' image and its shapes (also the scenes of
    :mod:`mmbcn.datasets.shapes_cls`)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    img[...] = rng.uniform(0, 80, size=3)  # dark background
    return _add_shapes(rng, img, MAX_SHAPES, (120, 255), shaded=False)


def _hard_image(rng):
    """A 'hard' image and its shapes."""
    h, w = (int(v) for v in rng.integers(HARD_SIDES[0], HARD_SIDES[1] + 1,
                                         size=2))
    return _add_shapes(rng, _background(rng, h, w), HARD_MAX_SHAPES,
                       (0, 255), shaded=True)


IMAGE = {'easy': _image, 'hard': _hard_image}


def check_variant(variant: str) -> str:
    """``variant``, or a ValueError naming the accepted ones."""
    if variant not in VARIANTS:
        raise ValueError(f'shapes demo data variant {variant!r}: not one of '
                         f'{", ".join(map(repr, VARIANTS))}')
    return variant


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


def generate_shapes_coco(root: str,
                         sizes: Optional[Dict[str, int]] = None,
                         variant: str = 'easy') -> None:
    """Write the ``variant`` of the dataset to ``root`` (deterministic: same
    bytes each time).

    ``sizes`` overrides the number of images per split (a split's first
    images are the same whatever its size)."""
    draw = IMAGE[check_variant(variant)]
    info = dict(description='mmbcn shapes demo', version=GENERATOR_VERSION)
    if variant != 'easy':  # 'easy' files stay as they were before variants
        info['variant'] = variant
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    for split, (count, seed) in SPLITS.items():
        count = (sizes or {}).get(split, count)
        os.makedirs(osp.join(root, split), exist_ok=True)
        rng = np.random.default_rng(seed)
        images, anns = [], []
        for i in range(count):
            img, shapes = draw(rng)
            name = f'{split}_{i:04d}.jpg'
            cv2.imwrite(osp.join(root, split, name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=i + 1, file_name=name,
                               height=img.shape[0], width=img.shape[1]))
            anns += _annotations(shapes, i + 1, len(anns) + 1)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'),
                  'w') as f:
            json.dump(dict(info=info, images=images, annotations=anns,
                           categories=categories), f)


@DATASETS.register_module()
class ShapesCocoDataset(CocoDataset):
    """COCO-format shapes dataset, its ``variant`` ('easy' or 'hard')
    generated under ``data_root`` on first use (``tools/train.py`` and
    ``tools/test.py`` call :meth:`ensure_data`; so does building the
    dataset)."""

    METAINFO = dict(classes=CLASSES,
                    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75)])
    # it reports what mmdet drops itself, from the file it has read
    # (tools/train.py and tools/test.py do it for other COCO datasets)
    reports_dropped_annotations = True

    def __init__(self, *args, data_root: str = '', variant: str = 'easy',
                 **kwargs):
        self.variant = check_variant(variant)  # read by load_data_list
        if data_root:
            self.ensure_data(data_root, variant)
        super().__init__(*args, data_root=data_root, **kwargs)

    @classmethod
    def ensure_data(cls, data_root: str,
                    variant: Optional[str] = None) -> None:
        """Generate the ``variant`` of the data into ``data_root`` unless
        it is there. Safe when several processes start at once: each
        writes a private copy and the first rename wins. ``variant`` None
        (the tools' data set-up for a config whose dataset names no
        variant): the data there is accepted whatever its variant (the
        dataset then checks its own), 'easy' is generated where there is
        none.

        Raises:
            RuntimeError: ``data_root`` exists and holds something else, an
                annotation file is not valid JSON (truncated), or the data
                was written by another version of the generator or is of
                another variant; the message names the path and what to
                do.
            ValueError: ``variant`` is not one of :data:`VARIANTS`.
        """
        if variant is not None:
            check_variant(variant)
        root = osp.normpath(data_root)
        if not osp.isfile(osp.join(root, 'annotations', 'instances_val.json')):
            cls._generate(data_root, root, variant or 'easy')
        for split in SPLITS:
            check_annotation_file(
                osp.join(root, 'annotations', f'instances_{split}.json'),
                data_root, variant)

    @staticmethod
    def _generate(data_root: str, root: str, variant: str) -> None:
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
            generate_shapes_coco(tmp, variant=variant)
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
        content = check_annotation_file(self.ann_file, self.data_root,
                                        self.variant)
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


def check_annotation_file(path: str, data_root: str,
                          variant: Optional[str] = 'easy') -> Optional[dict]:
    """Raise a RuntimeError naming ``path`` if it is not valid JSON, not a
    COCO instances file (``images``, ``annotations``, ``categories``
    lists; each annotation with an image, a category id, a 4-number
    ``bbox``, a polygon list or an RLE ``segmentation``), was written by
    another version of the generator or holds another variant of the data
    than ``variant`` (None: any). Returns the parsed file (None if ``path``
    does not exist)."""
    if variant is not None:
        check_variant(variant)
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
    found = info.get('variant', 'easy')  # 'easy' files name none
    if variant is not None and found != variant:
        raise RuntimeError(
            f'annotation file {path!r} holds the {found!r} variant of the '
            f'shapes demo data, but the dataset asks for the {variant!r} '
            f'variant. Delete the data_root {data_root!r} to have the '
            f'{variant!r} data generated there, or point data_root at '
            f'another directory (one variant per data root)')
    return content
