"""Saving never loses the last good checkpoint and never writes one that
does not load back with weights_only=True; --resume skips a truncated
newest checkpoint with a warning."""
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch

import mmbcn  # noqa: F401
from mmbcn.engine import CheckpointLoadError
from mmbcn.engine.checkpoint.plain_state import decode, encode
from mmbcn_toy import STARTS, awkward_objects
from tool_runner import load_tool, run
from toy_run import toy_config


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.all(a == b)))
    if isinstance(a, dict):
        return (type(a) is type(b) and list(a) == list(b)
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if hasattr(a, '_log_history'):  # HistoryBuffer
        return (same(a._log_history, b._log_history)
                and same(a._count_history, b._count_history))
    return type(a) is type(b) and a == b


def test_awkward_objects_round_trip_through_weights_only(tmp_path):
    objects = awkward_objects()
    path = tmp_path / 'c.pth'
    torch.save(encode(objects), path)
    back = decode(torch.load(path, weights_only=True))
    for key, value in objects.items():
        assert same(value, back[key]), key


def test_unencodable_object_is_named_with_its_key_path():
    with pytest.raises(TypeError, match=r"checkpoint\['meta'\]\['bad'\] "
                       r'holds a torch.nn.modules.activation.ReLU'):
        encode({'meta': {'bad': torch.nn.ReLU()}})


def work(tmp_path, name='work'):
    return str(tmp_path / name)


@pytest.mark.slow
def test_checkpoints_with_awkward_objects_resume(tmp_path):
    cfg = toy_config(tmp_path, max_keep_ckpts=1,
                     hooks=[dict(type='PutInCheckpointHook'),
                            dict(type='RecordStartHook')])
    load_tool('train').main([cfg, '--work-dir', work(tmp_path)])
    ckpt = torch.load(osp.join(work(tmp_path), 'iter_4.pth'),
                      weights_only=True)
    assert not osp.exists(osp.join(work(tmp_path), 'iter_2.pth'))
    assert same(awkward_objects(), decode(ckpt['meta']['extra']))
    del STARTS[:]
    load_tool('train').main([cfg, '--work-dir', work(tmp_path), '--resume',
                             '--cfg-options', 'train_cfg.max_iters=6'])
    assert STARTS == [4]


@pytest.mark.slow
def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, max_keep_ckpts=1, hooks=[
        dict(type='PutInCheckpointHook', what='unencodable', at_iter=4)])
    with pytest.raises(TypeError, match=r"\['meta'\]\['extra'\]\['bad'\]"):
        load_tool('train').main([cfg, '--work-dir', work(tmp_path)])
    kept = osp.join(work(tmp_path), 'iter_2.pth')
    assert torch.load(kept, weights_only=True)['meta']['iter'] == 2
    assert not osp.exists(osp.join(work(tmp_path), 'iter_4.pth'))
    with open(osp.join(work(tmp_path), 'last_checkpoint')) as f:
        assert f.read() == kept


@pytest.mark.slow
def test_kill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A SIGKILL while the new checkpoint is being written (mmengine has
    deleted the old one by then) leaves the old one, and --resume goes on
    from it."""
    cfg = toy_config(tmp_path, max_keep_ckpts=1, hooks=[
        dict(type='KillWhileSavingHook', at_iter=4,
             once=str(tmp_path / 'killed')),
        dict(type='RecordStartHook')])
    with pytest.raises(AssertionError, match='exited -9'):
        run([sys.executable, 'tools/train.py', cfg, '--work-dir',
             work(tmp_path)], env_extra=dict(OMP_NUM_THREADS='1'))
    assert torch.load(osp.join(work(tmp_path), 'iter_2.pth'),
                      weights_only=True)['meta']['iter'] == 2
    assert [n for n in os.listdir(work(tmp_path)) if n.endswith('.part.pth')]
    del STARTS[:]
    load_tool('train').main([cfg, '--work-dir', work(tmp_path), '--resume'])
    assert STARTS == [2]
    names = os.listdir(work(tmp_path))
    assert 'iter_4.pth' in names and 'iter_2.pth' not in names
    assert not [n for n in names if n.endswith('.part.pth')]  # cleaned


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


@pytest.fixture
def two_checkpoints(tmp_path):
    """A run with iter_2.pth and iter_4.pth (max_iters 4, then 6)."""
    cfg = toy_config(tmp_path, hooks=[dict(type='RecordStartHook')])
    load_tool('train').main([cfg, '--work-dir', work(tmp_path)])
    return cfg


@pytest.mark.slow
def test_resume_skips_a_truncated_newest_checkpoint(tmp_path,
                                                    two_checkpoints):
    truncate(osp.join(work(tmp_path), 'iter_4.pth'))
    del STARTS[:]
    with pytest.warns(UserWarning, match=r'skipped 1 .*iter_4.pth.*'
                      r'Resuming from .*iter_2.pth'):
        load_tool('train').main([two_checkpoints, '--work-dir',
                                 work(tmp_path), '--resume', '--cfg-options',
                                 'train_cfg.max_iters=6'])
    assert STARTS == [2]


@pytest.mark.slow
def test_resume_without_last_checkpoint_record_finds_the_newest(
        tmp_path, two_checkpoints):
    os.unlink(osp.join(work(tmp_path), 'last_checkpoint'))
    del STARTS[:]
    load_tool('train').main([two_checkpoints, '--work-dir', work(tmp_path),
                             '--resume', '--cfg-options',
                             'train_cfg.max_iters=6'])
    assert STARTS == [4]


@pytest.mark.slow
def test_resume_stops_when_no_checkpoint_loads(tmp_path, two_checkpoints):
    for name in ('iter_2.pth', 'iter_4.pth'):
        truncate(osp.join(work(tmp_path), name))
    with pytest.raises(CheckpointLoadError, match='no checkpoint in .* loads'):
        load_tool('train').main([two_checkpoints, '--work-dir',
                                 work(tmp_path), '--resume'])
