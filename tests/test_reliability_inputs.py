"""Bad inputs are refused with the file, key or option and what to do:
training lengths, damaged checkpoint encodings, fold and demo options,
COCO annotation files (structure, what mmdet would drop without a word),
and the converter's refusal of a pickled payload."""
import json
import os
import os.path as osp
import sys
import warnings

import pytest
import torch
from mmengine.config import Config

import mmbcn  # noqa: F401
from mmbcn.datasets import ShapesCocoDataset, generate_shapes_coco
from mmbcn.engine import (CheckpointLoadError, UnsafeCheckpointError,
                          load_weights_only)
from mmbcn.engine.checkpoint.plain_state import TAG, PlainStateError, decode
from mmbcn.engine.runner_support import prepare_and_check_data
from tool_runner import load_tool
from toy_run import toy_config


# --------------------------------------------------- training lengths
@pytest.mark.parametrize('option', ['train_cfg.max_iters=-5',
                                    'train_cfg.max_iters=0',
                                    'train_cfg.val_interval=0'])
def test_training_length_that_trains_nothing_is_refused(tmp_path, option):
    cfg = toy_config(tmp_path)
    key = option.split('=')[0]
    with pytest.raises(ValueError, match=f'{key}=.* whole number >= 1'):
        load_tool('train').main([cfg, '--work-dir', str(tmp_path / 'w'),
                                 '--cfg-options', option])
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('flag', ['--max-iters', '--val-interval',
                                  '--img-size', '--threads'])
@pytest.mark.parametrize('value', ['0', '-3'])
def test_demo_counts_below_one_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        load_tool('demo').parse_args([flag, value])
    assert f'{flag} {value}: must be >= 1' in capsys.readouterr().err


# ------------------------------------------------ checkpoint encodings
def deep_list(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def save_deep(path, depth):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))
    try:
        torch.save({'state_dict': {}, 'meta': {'x': deep_list(depth)}}, path)
    finally:
        sys.setrecursionlimit(limit)


def test_deeply_nested_checkpoint_is_named(tmp_path):
    path = tmp_path / 'deep.pth'
    save_deep(path, 3000)
    with pytest.raises(CheckpointLoadError, match=r"deep.pth: checkpoint\["
                       r"'meta'\]\['x'\](\[0\])+: nested more than 100"):
        load_weights_only(str(path))


MALFORMED = {
    'ndarray data not a tensor': {TAG: 'ndarray', 'data': 'x',
                                  'dtype': '<f4'},
    'ndarray without dtype': {TAG: 'ndarray', 'data': torch.ones(2)},
    'bytes array of a wrong shape': {
        TAG: 'ndarray_bytes', 'shape': [7], 'dtype': '<f4',
        'data': torch.zeros(4, dtype=torch.uint8)},
    'history of unequal lengths': {TAG: 'HistoryBuffer',
                                   'log_history': torch.ones(2),
                                   'count_history': torch.ones(3),
                                   'max_length': 5},
    'dict keys not a list': {TAG: 'dict', 'ordered': False, 'keys': 3,
                             'values': []},
    'enum module not a string': {TAG: 'Enum', 'module': ['x'],
                                 'class': 'C', 'name': 'A', 'value': 1},
    'counter of a list': {TAG: 'Counter', 'items': [1, 2]},
    'set of a number': {TAG: 'set', 'items': 5},
    'date not a date': {TAG: 'date', 'iso': 'yesterday'},
    'tag not a string': {TAG: ['ndarray']},
}


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_plain_entries_are_named(tmp_path, case):
    with pytest.raises(PlainStateError, match=r"checkpoint\['meta'\]\['e'\]"):
        decode({'meta': {'e': MALFORMED[case]}})
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': {}, 'meta': {'e': MALFORMED[case]}}, path)
    with pytest.raises(CheckpointLoadError,
                       match=r"bad.pth: checkpoint\['meta'\]\['e'\]: "
                       r'(malformed|unknown)'):
        load_weights_only(str(path))


@pytest.mark.parametrize('content,why', [
    (b'', 'the file is empty'),
    (b'<!DOCTYPE html><html>Not found</html>', 'it is a web page'),
    (b'{"state_dict": {}}', 'it is text'),
    (b'GIF89a\x01\x00', "it starts with b'GIF89a"),
])
def test_file_that_is_no_checkpoint_is_named_as_such(tmp_path, content,
                                                     why):
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointLoadError) as err:
        load_weights_only(str(path))
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert f'model.pth: not a PyTorch checkpoint: {why}' in str(err.value)


@pytest.mark.slow
def test_test_tool_names_a_deeply_nested_checkpoint(tmp_path):
    cfg = toy_config(tmp_path)
    path = tmp_path / 'deep.pth'
    save_deep(path, 3000)
    with pytest.raises(CheckpointLoadError, match='deep.pth: .*nested'):
        load_tool('test').main([cfg, str(path), '--work-dir',
                                str(tmp_path / 'w')])


# ------------------------------------------------------ tool options
@pytest.mark.parametrize('shape', [['0', '3', '0', '0'],
                                   ['1', '3', '-8', '8']])
def test_fold_verify_shape_below_one_is_refused(tmp_path, shape, capsys):
    with pytest.raises(SystemExit):
        load_tool('deploy/fold_bcn').main(
            ['c.py', 'c.pth', str(tmp_path / 'o.pth'), '--verify-shape'] +
            shape)
    assert '--verify-shape' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('content', [{'runs': 5}, [1, 2], {
    'task': 'detection', 'seed': 0, 'runs': [{'name': 'bcn'}]
}, 'not json'])
def test_demo_summarize_names_the_results_file(tmp_path, content):
    folder = tmp_path / 'demo_seed0'
    folder.mkdir()
    (folder / 'results.json').write_text(
        content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as err:
        load_tool('demo').main(['--summarize', str(folder)])
    assert str(folder / 'results.json') in str(err.value)


# ------------------------------------------------------ COCO files
@pytest.fixture
def shapes(tmp_path):
    """A small generated shapes data root and its train annotations."""
    root = tmp_path / 'shapes'
    generate_shapes_coco(str(root), sizes=dict(train=3, val=2))
    return root, root / 'annotations' / 'instances_train.json'


def build(root):
    return ShapesCocoDataset(data_root=str(root),
                             ann_file='annotations/instances_train.json',
                             data_prefix=dict(img='train/'), pipeline=[])


def edit(ann, change):
    content = json.loads(ann.read_text())
    change(content)
    ann.write_text(json.dumps(content))


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_coco_file_without_a_section_is_named(shapes, key):
    root, ann = shapes
    edit(ann, lambda c: c.pop(key))
    with pytest.raises(RuntimeError, match=f"instances_train.json'?: has no "
                       f"'{key}' list"):
        build(root)


def test_coco_bbox_given_as_a_string_names_annotation_and_image(shapes):
    root, ann = shapes

    def stringify(content):
        content['annotations'][1]['bbox'] = '10 20 30 40'

    edit(ann, stringify)
    content = json.loads(ann.read_text())
    first = content['annotations'][1]
    image = {i['id']: i['file_name']
             for i in content['images']}[first['image_id']]
    with pytest.raises(RuntimeError) as err:
        build(root)
    message = str(err.value)
    assert 'instances_train.json' in message and image in message
    assert f"annotations[1] (id {first['id']}" in message
    assert 'bbox' in message and '4 numbers' in message


def test_coco_file_without_info_is_not_called_version_1(shapes):
    root, ann = shapes
    edit(ann, lambda c: c.pop('info'))
    with pytest.raises(RuntimeError) as err:
        build(root)
    assert 'has no info.version' in str(err.value)
    assert 'by version 1 ' not in str(err.value)


def test_annotations_mmdet_would_drop_are_counted_once(shapes):
    root, ann = shapes

    def spoil(content):
        anns = content['annotations']
        anns[0]['category_id'] = 99
        rle = anns[1]['segmentation']
        anns[1]['segmentation'] = [[1, 1, 5, 1]]  # 4 coordinates
        anns[2]['segmentation'] = [[1, 1, 5, 1, 5, 5], [2, 2]]
        assert isinstance(rle, dict)

    edit(ann, spoil)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        dataset = build(root)
    reports = [str(w.message) for w in seen
               if 'instances_train.json' in str(w.message)]
    assert len(reports) == 1, reports
    assert ('1 annotation(s) with a category_id that is not one of the '
            'categories') in reports[0]
    assert '2 polygon(s) with fewer than 6 coordinates' in reports[0]
    assert '1 instance(s) left without a polygon' in reports[0]
    assert dataset.dropped == dict(unknown_category=1, short_polygons=2,
                                   instances_without_polygon=1)


def mmdet_coco_config(root):
    """A tools config whose training set is mmdet's own CocoDataset on the
    shapes data."""
    from mmbcn.datasets.coco_demo import CLASSES
    return Config(dict(
        default_scope='mmdet', launcher='none',
        train_dataloader=dict(dataset=dict(
            type='CocoDataset', data_root=str(root),
            metainfo=dict(classes=CLASSES),
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'), pipeline=[]))))


def test_tools_report_what_mmdet_drops_from_any_coco_file(shapes):
    root, ann = shapes
    edit(ann, lambda c: c['annotations'][0].update(category_id=42))
    with pytest.warns(UserWarning, match=r'instances_train.json: 1 '
                      'annotation.* category_id that is not one of'):
        prepare_and_check_data(mmdet_coco_config(root), ['train_dataloader'])


def test_tools_refuse_a_coco_file_with_a_string_bbox(shapes):
    root, ann = shapes
    edit(ann, lambda c: c['annotations'][0].update(bbox='1 2 3 4'))
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.ann_file'
                       r".*instances_train.json' annotations\[0\].*bbox"):
        prepare_and_check_data(mmdet_coco_config(root), ['train_dataloader'])


# -------------------------------------------------- the converter
def test_converter_calls_a_pickled_payload_refused(tmp_path, capsys):

    class Payload:

        def __reduce__(self):
            return os.getcwd, ()

    src = tmp_path / 'rn50_bcn_ws.pth'
    torch.save({'state_dict': {'x': torch.ones(1)}, 'p': Payload()}, src)
    dst = tmp_path / 'out.pth'
    assert load_tool('model_converters/official_bcn').main(
        [str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert 'refused' in err and 'pickled objects' in err
    assert 'truncated' not in err
    assert not osp.exists(dst)
