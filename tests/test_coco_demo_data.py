"""The COCO shapes demo data (mmbcn/datasets/coco_demo.py): generated
deterministically (the same bytes every time, in every process), and
generated once, completely, when several processes start on a new data
root at the same time; its 'easy' variant (the default) the same bytes as
before there were variants, its 'hard' one harder in the ways it promises,
one variant per data root."""
import hashlib
import json
import os
import traceback

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from dist_utils import process_context
from mmbcn.datasets.coco_demo import (SPLITS, ShapesCocoDataset,
                                      generate_shapes_coco)

SMALL = dict(train=3, val=2)


def tree(root):
    """{relative path: sha256} of every file under ``root``."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return digests


def annotations(root, split):
    with open(os.path.join(root, 'annotations',
                           f'instances_{split}.json')) as f:
        return json.load(f)


def assert_complete(root, sizes):
    """Every split has its annotation file (valid JSON), which lists
    ``sizes[split]`` images, exactly the files of the split's folder; the
    annotations refer to listed images."""
    files = tree(root)
    for split, count in sizes.items():
        coco = annotations(root, split)
        assert len(coco['images']) == count
        assert {f'{split}/{image["file_name"]}'
                for image in coco['images']} == {
                    p for p in files if p.startswith(f'{split}/')}
        ids = {image['id'] for image in coco['images']}
        assert coco['annotations'] and all(a['image_id'] in ids
                                           for a in coco['annotations'])


def test_same_bytes_every_time(tmp_path):
    generate_shapes_coco(str(tmp_path / 'a'), sizes=SMALL)
    generate_shapes_coco(str(tmp_path / 'b'), sizes=SMALL)
    assert_complete(tmp_path / 'a', SMALL)
    first = tree(tmp_path / 'a')
    assert first == tree(tmp_path / 'b')
    # images differ from each other: the hash equality is not vacuous
    images = [h for p, h in first.items() if p.endswith('.jpg')]
    assert len(images) == sum(SMALL.values()) == len(set(images))


def test_first_images_do_not_depend_on_the_split_size(tmp_path):
    generate_shapes_coco(str(tmp_path / 'small'), sizes=dict(train=2,
                                                             val=1))
    generate_shapes_coco(str(tmp_path / 'large'), sizes=SMALL)
    small, large = tree(tmp_path / 'small'), tree(tmp_path / 'large')
    images = [p for p in small if p.endswith('.jpg')]
    assert len(images) == 3
    for path in images:
        assert small[path] == large[path], path
    for split in ('train', 'val'):
        a = annotations(tmp_path / 'small', split)
        b = annotations(tmp_path / 'large', split)
        assert a['images'] == b['images'][:len(a['images'])]
        assert a['annotations'] == b['annotations'][:len(a['annotations'])]


def _ensure(root, barrier, results):
    try:
        barrier.wait(timeout=120)
        ShapesCocoDataset.ensure_data(root)
        results.put('ok')
    except BaseException:
        results.put(traceback.format_exc())


@pytest.mark.slow
@pytest.mark.dist
def test_processes_starting_together_generate_one_complete_dataset(
        tmp_path):
    """Three processes (as the ranks of a distributed run, or train and
    test started side by side) call ensure_data on the same new root at
    the same moment: none fails, the root holds the complete dataset,
    byte for byte what one generation writes, and no temporary copy is
    left beside it."""
    parent = tmp_path / 'data'
    root = str(parent / 'shapes')
    context = process_context('mmbcn.datasets.coco_demo')
    barrier, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_ensure,
                                 args=(root, barrier, results))
                 for _ in range(3)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert outcomes == ['ok'] * 3, '\n'.join(outcomes)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert os.listdir(parent) == ['shapes']
    sizes = {split: count for split, (count, _) in SPLITS.items()}
    assert_complete(root, sizes)
    generate_shapes_coco(str(tmp_path / 'reference'))
    assert tree(root) == tree(tmp_path / 'reference')


def test_data_from_another_generator_version_is_refused(tmp_path):
    """A data root written by another version of the generator (other
    images, other results) is named with what to do, not used."""
    root = tmp_path / 'shapes'
    generate_shapes_coco(str(root), sizes=SMALL)
    ShapesCocoDataset.ensure_data(str(root))  # this version: accepted
    path = root / 'annotations' / 'instances_train.json'
    content = json.loads(path.read_text())
    del content['info']  # as version 1 wrote it
    path.write_text(json.dumps(content))
    with pytest.raises(RuntimeError, match=r'instances_train\.json.*'
                       r'version 1 .*Delete the data_root'):
        ShapesCocoDataset.ensure_data(str(root))


# ------------------------------------------------------------ the variants
# sha256 over (path, bytes) of every file the 'easy' data writes for SMALL,
# from the generator as it was before there were variants: the 'easy' data
# (and so existing data roots and the pretraining cache keys) stays the
# same bytes
EASY_SMALL_DIGEST = (
    '441fa98fe7a42e13af1011974eb02b70666a747bd32e196f29873757eaed08e2')


def digest(root):
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode() + b'\0')
            with open(path, 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def test_easy_data_is_the_same_bytes_as_before_variants(tmp_path):
    generate_shapes_coco(str(tmp_path / 'default'), sizes=SMALL)
    generate_shapes_coco(str(tmp_path / 'easy'), sizes=SMALL,
                         variant='easy')
    assert digest(tmp_path / 'default') == EASY_SMALL_DIGEST
    assert digest(tmp_path / 'easy') == EASY_SMALL_DIGEST
    assert 'variant' not in annotations(tmp_path / 'easy', 'train')['info']


def background_std(root, split, image):
    """Per-channel std of ``image``'s pixels away from every shape."""
    coco = annotations(root, split)
    img = cv2.imread(os.path.join(root, split, image['file_name']))
    shapes = np.zeros(img.shape[:2], np.uint8)
    for ann in coco['annotations']:
        if ann['image_id'] == image['id']:
            shapes |= mask_utils.decode(ann['segmentation'])
    shapes = cv2.dilate(shapes, np.ones((7, 7), np.uint8))  # JPEG edges
    return img[shapes == 0].astype(float).std(axis=0)


def test_hard_variant(tmp_path):
    """Deterministic, other images than 'easy', each side 160-256 px and
    not all alike, up to 5 shapes per image (more than 'easy' draws),
    shapes of dark colours too, textured backgrounds; the variant named in
    the annotation files."""
    generate_shapes_coco(str(tmp_path / 'a'), sizes=SMALL, variant='hard')
    generate_shapes_coco(str(tmp_path / 'b'), sizes=SMALL, variant='hard')
    generate_shapes_coco(str(tmp_path / 'easy'), sizes=SMALL)
    assert_complete(tmp_path / 'a', SMALL)
    hard = tree(tmp_path / 'a')
    assert hard == tree(tmp_path / 'b')
    easy = tree(tmp_path / 'easy')
    assert not {h for p, h in hard.items() if p.endswith('.jpg')} & {
        h for p, h in easy.items() if p.endswith('.jpg')}
    sides, counts, darkest = set(), [], 255.0
    for split in SMALL:
        coco = annotations(tmp_path / 'a', split)
        assert coco['info'] == dict(description='mmbcn shapes demo',
                                    version=2, variant='hard')
        for image in coco['images']:
            img = cv2.imread(
                str(tmp_path / 'a' / split / image['file_name']))
            assert img.shape[:2] == (image['height'], image['width'])
            assert 160 <= min(img.shape[:2]) <= max(img.shape[:2]) <= 256
            sides.update(img.shape[:2])
            anns = [a for a in coco['annotations']
                    if a['image_id'] == image['id']]
            counts.append(len(anns))
            for ann in anns:
                mask = mask_utils.decode(ann['segmentation']) > 0
                darkest = min(darkest, img[mask].mean(axis=0).min())
            assert background_std(tmp_path / 'a', split, image).min() > 5
            easy_image = annotations(tmp_path / 'easy', split)['images'][
                image['id'] - 1]
            assert background_std(tmp_path / 'easy', split,
                                  easy_image).max() < 2  # plain
    assert len(sides) > 3
    assert 3 < max(counts) <= 5 and min(counts) >= 1
    assert darkest < 100  # 'easy' shapes are 120-255 in every channel


def test_dataset_of_one_variant_refuses_data_of_the_other(tmp_path):
    """A data root holds one variant; a dataset asking for the other one
    is refused with the file, both variants and what to do. The tools'
    data set-up (no variant) accepts either."""
    for variant, other in (('easy', 'hard'), ('hard', 'easy')):
        root = tmp_path / variant
        generate_shapes_coco(str(root), sizes=SMALL, variant=variant)
        ShapesCocoDataset.ensure_data(str(root))
        ShapesCocoDataset.ensure_data(str(root), variant)
        with pytest.raises(
                RuntimeError,
                match=rf'instances_train\.json.* holds the {variant!r} '
                rf'variant.* asks for the {other!r} variant\. Delete the '
                r'data_root .*or point data_root at another directory'):
            ShapesCocoDataset(
                data_root=str(root), variant=other,
                ann_file='annotations/instances_train.json',
                data_prefix=dict(img='train/'), pipeline=[])
    dataset = ShapesCocoDataset(
        data_root=str(tmp_path / 'hard'), variant='hard',
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), pipeline=[])
    assert len(dataset) == SMALL['train']


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'medium'.*'easy', 'hard'"):
        generate_shapes_coco(str(tmp_path / 'x'), sizes=SMALL,
                             variant='medium')
    assert not (tmp_path / 'x').exists()
    with pytest.raises(ValueError, match=r"'medium'.*'easy', 'hard'"):
        ShapesCocoDataset(data_root=str(tmp_path / 'y'), variant='medium',
                          ann_file='annotations/instances_train.json',
                          pipeline=[])
    assert not (tmp_path / 'y').exists()


def test_tools_generate_the_variant_that_the_config_names(tmp_path):
    """The tools' data set-up (tools/train.py, tools/test.py, the demo)
    generates the variant a config's dataset names, where there is none."""
    from mmengine.config import Config

    from mmbcn.engine.runner_support import prepare_and_check_data
    root = tmp_path / 'hard'
    cfg = Config(
        dict(default_scope='mmdet',
             train_dataloader=dict(dataset=dict(
                 type='ShapesCocoDataset', data_root=str(root),
                 variant='hard', ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/')))))
    prepare_and_check_data(cfg, ['train_dataloader'])
    for split in SPLITS:
        path = root / 'annotations' / f'instances_{split}.json'
        assert json.loads(path.read_text())['info']['variant'] == 'hard'
