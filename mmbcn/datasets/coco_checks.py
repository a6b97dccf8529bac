# Copyright (c) mmbcn contributors. All rights reserved.
"""Checks of COCO instance annotation files (standard library only).

* :func:`coco_structure_problem`: what makes a parsed file unreadable as
  COCO (a missing section, a ``bbox`` that is not 4 numbers, an annotation
  of no image), naming the annotation and its image;
* :func:`dropped_annotations`: what mmdet's ``CocoDataset`` and
  ``LoadAnnotations`` drop without a word (an unknown ``category_id``,
  polygons of fewer than 6 coordinates), counted, and
  :func:`dropped_message`, the report of it.
"""
from typing import Dict, Sequence


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coco_structure_problem(content) -> str:
    """What makes ``content`` (a parsed JSON file) unreadable as COCO
    instance annotations, naming the key, annotation and image; '' if
    nothing does."""
    if not isinstance(content, dict):
        return (f'holds a JSON {type(content).__name__}, not a COCO '
                'object with images, annotations and categories')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(content.get(key), list):
            return (f"has no '{key}' list (keys: {sorted(content)}), so it "
                    'is not a COCO instances file')
    files = {}
    for i, image in enumerate(content['images']):
        if not (isinstance(image, dict) and 'id' in image and isinstance(
                image.get('file_name'), str)):
            return f'images[{i}] needs an id and a file_name: {image!r}'
        files[image['id']] = image['file_name']
    for i, category in enumerate(content['categories']):
        if not (isinstance(category, dict) and 'id' in category):
            return f'categories[{i}] needs an id: {category!r}'
    for i, ann in enumerate(content['annotations']):
        problem = _annotation_problem(ann, files)
        if problem:
            ident = ann.get('id') if isinstance(ann, dict) else None
            image = files.get(ann.get('image_id')) if isinstance(
                ann, dict) else None
            return (f'annotations[{i}] (id {ident!r}'
                    + (f', image {image!r}' if image else '') +
                    f') {problem}')
    return ''


def _annotation_problem(ann, files) -> str:
    if not isinstance(ann, dict):
        return f'is a {type(ann).__name__}, not an object'
    if ann.get('image_id') not in files:
        return (f'refers to image_id {ann.get("image_id")!r}, which no '
                "entry of 'images' has")
    if 'category_id' not in ann:
        return 'has no category_id'
    bbox = ann.get('bbox')
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(_number(v) for v in bbox)):
        return (f'has bbox {bbox!r}: it must be a list of 4 numbers '
                '[x, y, width, height]')
    if 'area' in ann and not _number(ann['area']):
        return f'has area {ann["area"]!r}: it must be a number'
    segmentation = ann.get('segmentation')
    if segmentation is None or isinstance(segmentation, dict) and \
            'counts' in segmentation and 'size' in segmentation:
        return ''
    if not (isinstance(segmentation, list) and all(
            isinstance(p, list) and all(_number(v) for v in p)
            for p in segmentation)):
        return (f'has segmentation {str(segmentation)[:60]!r}: it must be '
                'a list of polygons (lists of numbers) or an RLE '
                "{'counts', 'size'}")
    return ''


def dropped_annotations(content: dict,
                        classes: Sequence[str]) -> Dict[str, int]:
    """What mmdet's ``CocoDataset`` and ``LoadAnnotations`` drop from
    ``content`` without a word: annotations whose ``category_id`` is not
    a category named in ``classes``, polygons with fewer than 6 (or an odd
    number of) coordinates, and the instances left with no polygon (they
    become ignored)."""
    known = {c['id'] for c in content['categories']
             if c.get('name') in classes}
    counts = dict(unknown_category=0, short_polygons=0,
                  instances_without_polygon=0)
    for ann in content['annotations']:
        if ann['category_id'] not in known:
            counts['unknown_category'] += 1
            continue
        polygons = ann.get('segmentation')
        if isinstance(polygons, list) and polygons:
            short = [p for p in polygons if len(p) < 6 or len(p) % 2]
            counts['short_polygons'] += len(short)
            if len(short) == len(polygons):
                counts['instances_without_polygon'] += 1
    return counts


def dropped_message(ann_file: str, counts: Dict[str, int],
                    classes: Sequence[str]) -> str:
    """The warning for :func:`dropped_annotations`' ``counts`` ('' if
    nothing is dropped)."""
    if not any(counts.values()):
        return ''
    return (f'{ann_file}: {counts["unknown_category"]} annotation(s) with a '
            'category_id that is not one of the categories '
            f'{list(classes)} are dropped; {counts["short_polygons"]} '
            'polygon(s) with fewer than 6 coordinates (or an odd number) '
            f'are dropped, and {counts["instances_without_polygon"]} '
            'instance(s) left without a polygon are ignored in training')
