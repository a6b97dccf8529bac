# Copyright (c) mmbcn contributors. All rights reserved.
"""Bundled classification data for pretraining backbones: small images of
the detection demo's shapes, generated deterministically on first use.

Each image is a scene drawn by the detection demo's generator
(:mod:`mmbcn.datasets.coco_demo`: plain dark background, 1-3 bright
squares, circles and triangles of random size, colour and rotation, later
shapes occluding earlier ones), downscaled from 256x256 to
:data:`IMAGE_SIZE` px. Its class is the set of shape kinds visible in it,
one of the 7 non-empty subsets of {square, circle, triangle}: telling them
apart needs what the detector needs (finding every shape, whatever its
size, colour, rotation and occlusion, and naming its kind), and the classes
are balanced (scenes are drawn until each class has its share). A shape
hidden completely does not count; a scene in which a shape stays visible by
fewer than :data:`MIN_VISIBLE_AREA` pixels (at 256 px) is skipped as
ambiguous. The channel order is the one the detector reads from the
demo's JPEG files (OpenCV's BGR).

Layout under ``data_root``::

    meta.json             version, classes, image size, split sizes
    train.npz, val.npz    images (N, S, S, 3) uint8, labels (N,) int64

``meta.json``'s ``version`` is :data:`GENERATOR_VERSION`; data written by
another version of this generator or of the scene generator is refused with
what to do.
"""
import itertools
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, Optional

import cv2
import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from . import coco_demo
from .pack_cls_inputs import PackClsInputs  # noqa: F401  (registers it)

SHAPES = coco_demo.CLASSES
# the non-empty subsets of the shape kinds, as sorted tuples of indices
SUBSETS = tuple(
    s for k in range(1, len(SHAPES) + 1)
    for s in itertools.combinations(range(len(SHAPES)), k))
CLASSES = tuple('+'.join(SHAPES[i] for i in s) for s in SUBSETS)
SPLITS = {'train': (3500, 10), 'val': (700, 11)}  # (images, seed)
IMAGE_SIZE = 64
MIN_VISIBLE_AREA = 300
GENERATOR_VERSION = 1


def _scene_class(shapes) -> Optional[int]:
    """The class of a scene (its visible shape kinds), or None if a shape
    is visible but too little to tell."""
    visible = set()
    for label, mask in shapes:
        area = int(mask.sum())
        if 0 < area < MIN_VISIBLE_AREA:
            return None
        if area:
            visible.add(label)
    return SUBSETS.index(tuple(sorted(visible))) if visible else None


def generate_split(count: int, seed: int, image_size: int = IMAGE_SIZE):
    """``count`` images (N, S, S, 3) uint8 and their labels (N,), the
    classes balanced (their counts differ by at most one), in the order
    they were drawn. Deterministic in (count, seed, image_size)."""
    quota = [count // len(CLASSES) + (c < count % len(CLASSES))
             for c in range(len(CLASSES))]
    rng = np.random.default_rng(seed)
    images = np.empty((count, image_size, image_size, 3), np.uint8)
    labels = np.empty(count, np.int64)
    done = 0
    while done < count:
        img, shapes = coco_demo._image(rng)
        label = _scene_class(shapes)
        if label is None or not quota[label]:
            continue
        quota[label] -= 1
        images[done] = cv2.resize(img, (image_size, image_size),
                                  interpolation=cv2.INTER_AREA)
        labels[done] = label
        done += 1
    return images, labels


def _meta(sizes: Dict[str, int]) -> dict:
    return dict(description='mmbcn shapes classification set',
                version=GENERATOR_VERSION,
                scene_generator_version=coco_demo.GENERATOR_VERSION,
                classes=list(CLASSES), image_size=IMAGE_SIZE, sizes=sizes)


def generate_shapes_cls(root: str,
                        sizes: Optional[Dict[str, int]] = None) -> None:
    """Write the dataset to ``root`` (deterministic: the same arrays each
    time). ``sizes`` overrides the number of images per split."""
    os.makedirs(root, exist_ok=True)
    counts = {split: (sizes or {}).get(split, count)
              for split, (count, _) in SPLITS.items()}
    for split, (_, seed) in SPLITS.items():
        images, labels = generate_split(counts[split], seed)
        with open(osp.join(root, f'{split}.npz'), 'wb') as f:
            np.savez_compressed(f, images=images, labels=labels)
    with open(osp.join(root, 'meta.json'), 'w') as f:
        json.dump(_meta(counts), f)


def check_meta(data_root: str) -> dict:
    """``data_root``'s meta.json, checked against this generator.

    Raises:
        RuntimeError: it is unreadable or was written by another version
            of this generator (or of the scene generator it draws with);
            the message names the path and what to do.
    """
    path = osp.join(data_root, 'meta.json')
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f'{path!r} is missing or damaged ({err}). Delete the data_root '
            f'{data_root!r} to have the classification data generated '
            'again') from err
    found = (meta.get('version'), meta.get('scene_generator_version'))
    wanted = (GENERATOR_VERSION, coco_demo.GENERATOR_VERSION)
    if found != wanted:
        raise RuntimeError(
            f'{path!r} was written by version {found[0]} of the shapes '
            f'classification generator (scenes: version {found[1]}); this '
            f'mmbcn writes version {wanted[0]} (scenes: {wanted[1]}), other '
            f'images. Delete the data_root {data_root!r} to have the data '
            'generated again')
    return meta


@DATASETS.register_module()
class ShapesClsDataset(BaseDataset):
    """The bundled shapes classification set (7 classes), generated under
    ``data_root`` on first use. ``ann_file`` is a split's ``.npz``
    (``'train.npz'``, ``'val.npz'``).

    Each sample is ``dict(img=HxWx3 uint8 array, gt_label=int)`` before
    the pipeline; :class:`~mmbcn.datasets.pack_cls_inputs.PackClsInputs`
    packs it for :class:`~mmbcn.models.classifiers.BackboneClassifier`.
    """

    METAINFO = dict(classes=CLASSES)

    def __init__(self, *args, data_root: str = '', **kwargs):
        if data_root:
            self.ensure_data(data_root)
        self._images = None
        super().__init__(*args, data_root=data_root, **kwargs)

    @classmethod
    def ensure_data(cls, data_root: str) -> None:
        """Generate the data into ``data_root`` unless it is there, then
        check its version. Safe when several processes start at once: each
        writes a private copy and the first rename wins.

        Raises:
            RuntimeError: ``data_root`` exists and holds something else, or
                data of another generator version.
        """
        root = osp.normpath(data_root)
        if not osp.isfile(osp.join(root, 'meta.json')):
            if osp.exists(root) and not (osp.isdir(root)
                                         and not os.listdir(root)):
                raise RuntimeError(
                    f'data_root {data_root!r} exists but does not hold the '
                    'shapes classification set (meta.json is missing): '
                    'remove it, or set data_root to a new directory')
            parent = osp.dirname(osp.abspath(root))
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix='.shapes-cls-', dir=parent)
            try:
                generate_shapes_cls(tmp)
                try:
                    os.rename(tmp, root)
                except OSError:
                    if not osp.isfile(osp.join(root, 'meta.json')):
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        check_meta(root)

    def load_data_list(self):
        check_meta(self.data_root)
        with np.load(self.ann_file) as arrays:
            self._images = arrays['images']
            labels = arrays['labels']
        return [
            dict(img_index=i, gt_label=int(label))
            for i, label in enumerate(labels)
        ]

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['img'] = self._images[info['img_index']].copy()
        info['img_shape'] = info['ori_shape'] = info['img'].shape[:2]
        return info
