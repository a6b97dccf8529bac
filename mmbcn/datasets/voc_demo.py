# Copyright (c) mmbcn contributors. All rights reserved.
"""Bundled demo data for semantic segmentation: a small PASCAL VOC-format
dataset of shapes on textured backgrounds, generated deterministically on
first use, and the mask check of the segmentation pipelines (size,
channels, class values).

Layout under ``data_root`` (as ``VOCdevkit/VOC2012``)::

    JPEGImages/shapes_{train,val}_NNNN.jpg
    SegmentationClass/shapes_{train,val}_NNNN.png   palette PNG, VOC colours
    ImageSets/Segmentation/{train,val}.txt

Classes: 0 background, 1 square, 2 circle, 3 triangle; 255 (void) marks a
2-pixel band along every object boundary, as in VOC's annotations. Each
class has its outline and its own range of hues (squares red, circles green,
triangles blue, +-40 degrees), flat with little noise; the background is a
muted, noisy texture. 1-3 shapes per image may overlap.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import Optional, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

CLASSES = ('background', 'square', 'circle', 'triangle')
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
VOID = 255
SPLITS = {'train': (64, 0), 'val': (24, 1)}  # images, seed
IMAGE_SIDES = (160, 240)  # inclusive range of height and width
SHAPES_PER_IMAGE = (1, 3)
SIZE_RANGE = (0.3, 0.6)  # shape size / shorter image side
HUES = {'square': 0, 'circle': 120, 'triangle': 240}  # degrees, +-HUE_SPREAD
HUE_SPREAD = 40
SPLIT_LIST = osp.join('ImageSets', 'Segmentation', '{}.txt')
FILE_PREFIX = 'shapes'


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted colour gradient with low-frequency blobs and strong pixel
    noise (the shapes are flat: texture tells them from the background)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tint = rng.uniform(60, 200, size=3)
    img = tint.mean() + 0.4 * (tint - tint.mean()) + (
        yy[..., None] * rng.uniform(-0.2, 0.2, size=3) +
        xx[..., None] * rng.uniform(-0.2, 0.2, size=3))
    blobs = rng.normal(0, 14, size=(h // 16 + 1, w // 16 + 1, 3))
    img += cv2.resize(blobs.astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    return img + rng.normal(0, 24, size=(h, w, 3))


def _shape_mask(label: int, rng: np.random.Generator, h: int,
                w: int) -> np.ndarray:
    """A filled square, circle or triangle (bool mask), at a random place,
    size and rotation, fully inside the image."""
    size = rng.uniform(*SIZE_RANGE) * min(h, w)
    cx = rng.uniform(size / 2, w - size / 2)
    cy = rng.uniform(size / 2, h - size / 2)
    mask = np.zeros((h, w), np.uint8)
    if CLASSES[label] == 'circle':
        cv2.circle(mask, (round(cx), round(cy)), round(size / 2), 1, -1)
    else:
        corners = 4 if CLASSES[label] == 'square' else 3
        radius = size / 2 * (np.sqrt(2) if corners == 4 else 1.15)
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(
            corners) / corners
        pts = np.stack([cx + radius * np.cos(angles),
                        cy + radius * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _shape_colour(label: int, rng: np.random.Generator) -> np.ndarray:
    """A BGR colour of the class's hue range, saturation and value 0.5-1."""
    hue = (HUES[CLASSES[label]] + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 360
    hsv = np.array([[[hue / 2, rng.uniform(128, 255),
                      rng.uniform(128, 255)]]]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def render_sample(
        rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3 uint8, BGR) and its label map (H, W uint8)."""
    h, w = (int(v) for v in rng.integers(IMAGE_SIDES[0], IMAGE_SIDES[1] + 1,
                                         size=2))
    img = _background(rng, h, w)
    labels = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(SHAPES_PER_IMAGE[0],
                                    SHAPES_PER_IMAGE[1] + 1))):
        label = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(label, rng, h, w)
        shade = rng.uniform(0.97, 1.03, size=(h, w, 1))
        img = np.where(mask[..., None], _shape_colour(label, rng) * shade,
                       img)
        labels[mask] = label  # later shapes occlude earlier ones
    kernel = np.ones((3, 3), np.uint8)
    boundary = cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)
    labels[boundary] = VOID
    return np.clip(img, 0, 255).astype(np.uint8), labels


def generate_voc_shapes(root: str) -> None:
    """Write the dataset to ``root``; the same bytes on every call with
    the same library versions."""
    for sub in ('JPEGImages', 'SegmentationClass',
                osp.dirname(SPLIT_LIST)):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(PALETTE)] = PALETTE
    palette[VOID] = (224, 224, 192)  # VOC's colour for void
    for split, (count, seed) in SPLITS.items():
        rng = np.random.default_rng(seed)
        names = []
        for i in range(count):
            name = f'{FILE_PREFIX}_{split}_{i:04d}'
            img, labels = render_sample(rng)
            cv2.imwrite(osp.join(root, 'JPEGImages', name + '.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask = Image.fromarray(labels)
            mask.putpalette(palette.flatten().tolist())  # 'L' -> 'P'
            mask.save(osp.join(root, 'SegmentationClass', name + '.png'))
            names.append(name)
        with open(osp.join(root, SPLIT_LIST.format(split)), 'w') as f:
            f.writelines(n + '\n' for n in names)


def _complete(root: str) -> bool:
    return all(
        osp.isfile(osp.join(root, SPLIT_LIST.format(split)))
        for split in SPLITS)


def prepare_voc_shapes(data_root: str) -> None:
    """Generate the dataset into ``data_root`` unless it is there.

    Several processes may call this at once (one per GPU): each writes a
    private copy beside ``data_root`` and renames it into place; the first
    rename wins and the others discard their copies.
    """
    root = osp.abspath(data_root)
    if _complete(root):
        return
    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}-', dir=parent)
    try:
        generate_voc_shapes(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _complete(root):
                raise RuntimeError(
                    f'{data_root!r} exists but does not hold the demo '
                    f'dataset ({SPLIT_LIST.format("val")} is missing): '
                    'remove it or set data_root to a new directory')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@DATASETS.register_module()
class VOCShapesDataset(PascalVOCDataset):
    """The bundled demo dataset (see the module docstring), in PASCAL VOC
    format; generated under ``data_root`` on first use.

    Args: as :class:`mmseg.datasets.PascalVOCDataset`.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, *args, data_root=None, **kwargs):
        if data_root:
            self.ensure_data(data_root)
        super().__init__(*args, data_root=data_root, **kwargs)

    @classmethod
    def ensure_data(cls, data_root: str) -> None:
        """Generate the data into ``data_root`` unless it is there (see
        :func:`prepare_voc_shapes`); ``tools/train.py`` and ``tools/test.py``
        call it before anything is built."""
        prepare_voc_shapes(data_root)

    def load_data_list(self) -> list:
        """The samples of ``ann_file``; raises a ValueError naming every
        image or mask file that is missing or empty, and what to do."""
        data_list = super().load_data_list()
        damaged = []
        for info in data_list:
            for key in ('img_path', 'seg_map_path'):
                path = info.get(key)
                if path is None:
                    continue
                if not osp.isfile(path):
                    damaged.append(f'{path!r} is missing')
                elif osp.getsize(path) == 0:
                    damaged.append(f'{path!r} is empty (0 bytes)')
        if damaged:
            shown = '; '.join(damaged[:5])
            more = f' (and {len(damaged) - 5} more)' if len(damaged) > 5 \
                else ''
            raise ValueError(
                f'{type(self).__name__} ({self.ann_file!r}): {shown}{more}. '
                'The generated demo data is damaged: delete '
                f'{self.data_root!r} and it is generated again on the next '
                'run')
        return data_list


@TRANSFORMS.register_module()
class CheckSegMapSize(BaseTransform):
    """Check a segmentation mask against its image, naming both files and
    what to do when it is wrong: otherwise crops and the IoU metric
    silently pair the wrong pixels, and the loss fails far from the file
    ("Target 200 is out of bounds", "stack expects each tensor to be equal
    size").

    The mask must have its image's size (as loaded, ``ori_shape``, so
    earlier resizing of the image does not matter), one channel (class
    indices, not colours) and, when ``num_classes`` is given, values in
    ``0 .. num_classes - 1`` or ``ignore_index``.

    Put it right after ``LoadAnnotations``. A sample without a mask and
    without a mask path (inference: ``mmseg.apis.inference_model``,
    ``MMSegInferencer``, which drop ``LoadAnnotations``) passes unchanged.

    Args:
        num_classes (int, optional): Classes of the dataset; None checks
            no values. Default None.
        ignore_index (int): The label of pixels that are not scored (VOC's
            void). Default 255.

    Required keys: ``ori_shape``, ``img_path``; ``gt_seg_map`` and
    ``seg_map_path`` when there is a mask.
    """

    def __init__(self, num_classes: Optional[int] = None,
                 ignore_index: int = VOID):
        if num_classes is not None and (
                not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f'CheckSegMapSize: num_classes must be a '
                             f'positive int or None, not {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        mask_path = results.get('seg_map_path')
        if 'gt_seg_map' not in results:
            if mask_path is None:
                return results  # inference: no mask to check
            raise KeyError(
                f'CheckSegMapSize: no mask loaded for {mask_path!r}: put '
                'CheckSegMapSize after LoadAnnotations in the pipeline')
        mask = results['gt_seg_map']
        img_path = results.get('img_path')
        if mask.ndim != 2:
            raise ValueError(
                f'segmentation mask {mask_path!r} (image {img_path!r}) has '
                f'shape {tuple(mask.shape)}: a mask holds one class index '
                'per pixel; save it as a single-channel PNG (palette or '
                'grayscale) of class indices, not as a colour image')
        image_hw = tuple(results['ori_shape'][:2])
        mask_hw = tuple(mask.shape[:2])
        if image_hw != mask_hw:
            raise ValueError(
                f'segmentation mask {mask_path!r} is '
                f'{mask_hw[1]}x{mask_hw[0]} (WxH) but its image '
                f'{img_path!r} is {image_hw[1]}x'
                f'{image_hw[0]}: every mask must have its image\'s size')
        if self.num_classes is not None:
            values = np.unique(mask)
            bad = values[(values >= self.num_classes)
                         & (values != self.ignore_index)]
            if bad.size:
                raise ValueError(
                    f'segmentation mask {mask_path!r} (image {img_path!r}) '
                    f'holds the values {bad.tolist()}, which are no class: '
                    f'a pixel is a class index 0..{self.num_classes - 1} '
                    f'or {self.ignore_index} (not scored); fix the mask, or '
                    'set num_classes in the config to the dataset\'s')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
