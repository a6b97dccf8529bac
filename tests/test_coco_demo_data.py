"""The COCO shapes demo data (mmbcn/datasets/coco_demo.py): generated
deterministically (the same bytes every time, in every process), and
generated once, completely, when several processes start on a new data
root at the same time. Properties only: the pictures and the number of
shapes are the generator's business."""
import hashlib
import json
import multiprocessing
import os
import traceback

import pytest

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
    context = multiprocessing.get_context('spawn')
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
