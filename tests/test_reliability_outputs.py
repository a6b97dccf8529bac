"""The fold tool and the converter never overwrite their inputs, write
their outputs atomically (both or neither) with the user's umask; the demo
datasets name the file or folder that is wrong."""
import contextlib
import errno
import json
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

import mmbcn  # noqa: F401
from mmbcn.datasets import ShapesCocoDataset, generate_shapes_coco
from mmbcn.models.official_checkpoint import save_checkpoint
from mmbcn.utils import OutputPathError, scoped_build
from tool_runner import load_tool
from toy_run import toy_config


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return os.stat(path).st_mode & 0o777


def snapshot(folder):
    return {name: open(osp.join(folder, name), 'rb').read()
            for name in sorted(os.listdir(folder))
            if osp.isfile(osp.join(folder, name))}


@pytest.fixture
def bcn_model(tmp_path):
    """(config, checkpoint) of the toy BCN+WS model, in their own folder."""
    folder = tmp_path / 'model'
    folder.mkdir()
    config = toy_config(folder, name='bcn.py')
    model = scoped_build(Config.fromfile(config).model, 'mmengine')
    checkpoint = str(folder / 'bcn.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return config, checkpoint


def fold(*args):
    return load_tool('deploy/fold_bcn').main(
        [str(a) for a in args] + ['--verify-shape', '2', '3', '8', '8'])


@pytest.mark.parametrize('case', ['OUT is CHECKPOINT', 'OUT.py is CONFIG',
                                  'OUT ends in .py',
                                  '--out-config is CONFIG',
                                  '--out-config is OUT'])
def test_fold_refuses_outputs_that_are_inputs(case, bcn_model):
    config, checkpoint = bcn_model
    folder = osp.dirname(config)
    args = {
        'OUT is CHECKPOINT': [checkpoint],
        'OUT.py is CONFIG': [osp.splitext(config)[0] + '.pth'],
        'OUT ends in .py': [osp.join(folder, 'folded.py')],
        '--out-config is CONFIG': [osp.join(folder, 'f.pth'), '--out-config',
                                   config],
        '--out-config is OUT': [osp.join(folder, 'f.pth'), '--out-config',
                                osp.join(folder, 'f.pth')],
    }[case]
    before = snapshot(folder)
    with pytest.raises(OutputPathError) as err:
        fold(config, checkpoint, *args)
    assert ('.py' in str(err.value) or 'same file' in str(err.value)
            or 'would destroy the' in str(err.value))
    assert snapshot(folder) == before


@pytest.mark.slow
def test_fold_writes_both_outputs_or_neither(bcn_model, tmp_path,
                                             monkeypatch):
    config, checkpoint = bcn_model
    out_dir = tmp_path / 'out'
    out = out_dir / 'folded.pth'

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    with monkeypatch.context() as patch:
        patch.setattr(torch, 'save', full_disk)
        with pytest.raises(OSError, match='No space left'):
            fold(config, checkpoint, out)
    assert os.listdir(out_dir) == []  # no config, no partial files

    with umask(0o027):
        assert fold(config, checkpoint, out) == 0
    assert sorted(os.listdir(out_dir)) == ['folded.pth', 'folded.py']
    assert mode(out) == mode(out_dir / 'folded.py') == 0o640
    assert torch.load(out, weights_only=True)['state_dict']


def test_converter_refuses_to_replace_its_source(tmp_path, capsys):
    official = load_tool('model_converters/official_bcn')
    src = tmp_path / 'rn50_bcn_ws.pth'
    src.write_bytes(b'the official file')
    assert official.main([str(src), str(src)]) == 1
    err = capsys.readouterr().err
    assert 'would destroy the official checkpoint' in err
    assert src.read_bytes() == b'the official file'
    assert os.listdir(tmp_path) == ['rn50_bcn_ws.pth']


@pytest.mark.parametrize('mask', [0o077, 0o002])
def test_converter_output_keeps_the_umask(tmp_path, mask):
    dst = tmp_path / 'converted.pth'
    with umask(mask):
        save_checkpoint({'state_dict': {'w': torch.ones(1)}}, str(dst))
    assert mode(dst) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ['converted.pth']


def test_truncated_demo_annotations_name_the_file(tmp_path):
    root = tmp_path / 'shapes'
    generate_shapes_coco(str(root), sizes=dict(train=2, val=2))
    ann = root / 'annotations' / 'instances_train.json'
    text = ann.read_text()
    json.loads(text)
    ann.write_text(text[:len(text) // 2])
    with pytest.raises(RuntimeError, match='instances_train.json.* is not '
                       'valid JSON.*Delete the data_root'):
        ShapesCocoDataset.ensure_data(str(root))
    with pytest.raises(RuntimeError, match='instances_train.json'):
        ShapesCocoDataset(data_root=str(root),
                          ann_file='annotations/instances_train.json',
                          data_prefix=dict(img='train/'), pipeline=[])


def test_demo_data_root_holding_other_files_is_named(tmp_path):
    """(The VOC demo data: test_segmentation_data.py.)"""
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'notes.txt').write_text('my files')
    with pytest.raises(RuntimeError, match=re.escape(repr(str(root))) +
                       '.* exists but does not hold the demo dataset'
                       '.*remove it'):
        ShapesCocoDataset.ensure_data(str(root))
    assert os.listdir(root) == ['notes.txt']
    assert sorted(os.listdir(tmp_path)) == ['mine']
