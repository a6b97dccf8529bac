"""Checkpoints are read with weights_only=True everywhere (local files even
with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, http(s):// and open-mmlab:// URLs
through a cache keyed by the whole URL), and a checkpoint of another model
is refused by tools/test.py and load_from."""
import json
import os.path as osp

import pytest
import torch
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

import mmbcn  # noqa: F401
from http_server import loopback_server, serve_bytes
from mmbcn.engine import UnsafeCheckpointError
from mmbcn.engine.checkpoint.remote import cache_path
from tool_runner import load_tool
from toy_run import toy_config


class Payload:
    """Unpickling it creates ``marker`` (``open(marker, 'w')``): proof
    that a loader ran code from a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def payload_bytes(marker) -> bytes:
    path = osp.join(osp.dirname(marker), 'payload.tmp')
    torch.save({'state_dict': {}, 'meta': Payload(marker)}, path)
    with open(path, 'rb') as f:
        return f.read()


def saved_bytes(obj, tmp_path) -> bytes:
    path = tmp_path / 'obj.tmp'
    torch.save(obj, path)
    return path.read_bytes()


@pytest.fixture
def server():
    with loopback_server() as httpd:
        yield httpd


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv('MMBCN_CHECKPOINT_CACHE', raising=False)
    return tmp_path / 'torch_home'


def test_every_mmengine_scheme_loads_through_mmbcn():
    loaders = CheckpointLoader._schemes
    for prefix in ('', 'http://', 'https://', 'open-mmlab://',
                   'torchvision://', 'mmcls://'):
        assert prefix in loaders
    assert {f.__module__ for f in loaders.values()} == {
        'mmbcn.engine.checkpoint.schemes'}


def test_local_payload_is_refused_even_when_torch_is_told_otherwise(
        tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'ran'
    path = tmp_path / 'evil.pth'
    path.write_bytes(payload_bytes(str(marker)))
    with pytest.raises(UnsafeCheckpointError, match='evil.pth: refused'):
        _load_checkpoint(str(path))
    cfg = toy_config(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        load_tool('test').main([cfg, str(path), '--work-dir',
                                str(tmp_path / 'work')])
    assert not marker.exists()


def test_remote_checkpoints_are_weights_only_and_cached_by_url(
        tmp_path, server, cache):
    first = {'state_dict': {'w': torch.zeros(2)}}
    second = {'state_dict': {'w': torch.ones(3)}}
    server.routes['/a/model.pth'] = serve_bytes(saved_bytes(first, tmp_path))
    server.routes['/b/model.pth'] = serve_bytes(
        saved_bytes(second, tmp_path))
    got_a = _load_checkpoint(server.url('/a/model.pth'))
    got_b = _load_checkpoint(server.url('/b/model.pth'))
    assert torch.equal(got_a['state_dict']['w'], torch.zeros(2))
    assert torch.equal(got_b['state_dict']['w'], torch.ones(3))
    for url in (server.url('/a/model.pth'), server.url('/b/model.pth')):
        assert osp.isfile(cache_path(url))
        assert cache_path(url).startswith(str(cache))

    marker = tmp_path / 'ran'
    server.routes['/c/evil.pth'] = serve_bytes(payload_bytes(str(marker)))
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        _load_checkpoint(server.url('/c/evil.pth'))
    assert not marker.exists()


def test_open_mmlab_urls_load_weights_only(tmp_path, server, cache,
                                           monkeypatch):
    """open-mmlab:// names resolve to URLs (here through the user's
    MMENGINE_HOME/open_mmlab.json) and load through the same cache."""
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    (home / 'open_mmlab.json').write_text(json.dumps(
        dict(toy_good=server.url('/zoo/good.pth'),
             toy_evil=server.url('/zoo/evil.pth'))))
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    marker = tmp_path / 'ran'
    server.routes['/zoo/good.pth'] = serve_bytes(
        saved_bytes({'w': torch.ones(1)}, tmp_path))
    server.routes['/zoo/evil.pth'] = serve_bytes(
        payload_bytes(str(marker)))
    assert torch.equal(_load_checkpoint('open-mmlab://toy_good')['w'],
                       torch.ones(1))
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint('open-mmlab://toy_evil')
    assert not marker.exists()


def test_train_refuses_a_remote_payload_in_load_from(tmp_path, server,
                                                     cache):
    marker = tmp_path / 'ran'
    server.routes['/evil.pth'] = serve_bytes(payload_bytes(str(marker)))
    cfg = toy_config(tmp_path, load_from=server.url('/evil.pth'))
    with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
        load_tool('train').main([cfg, '--work-dir', str(tmp_path / 'w')])
    assert not marker.exists()


@pytest.fixture
def other_checkpoint(tmp_path):
    """A checkpoint of ToyOtherNet, written by tools/train.py."""
    cfg = toy_config(tmp_path, name='other.py', max_iters=1, interval=1,
                     model=dict(type='ToyOtherNet'))
    load_tool('train').main([cfg, '--work-dir', str(tmp_path / 'other')])
    return str(tmp_path / 'other' / 'iter_1.pth')


@pytest.mark.slow
def test_test_tool_refuses_another_models_checkpoint(tmp_path,
                                                     other_checkpoint):
    cfg = toy_config(tmp_path)
    with pytest.raises(ValueError) as err:
        load_tool('test').main([cfg, other_checkpoint, '--work-dir',
                                str(tmp_path / 't')])
    message = str(err.value)
    assert 'not from this model' in message
    assert 'head.weight' in message  # missing
    assert 'body.weight' in message  # unexpected
    assert '--allow-partial' in message
    metrics = load_tool('test').main([cfg, other_checkpoint, '--work-dir',
                                      str(tmp_path / 't'), '--allow-partial'])
    assert 0 <= metrics['accuracy'] <= 1


@pytest.mark.slow
def test_load_from_refuses_another_models_checkpoint(tmp_path,
                                                     other_checkpoint):
    cfg = toy_config(tmp_path, load_from=other_checkpoint)
    with pytest.raises(ValueError, match='Missing: head.bias, head.weight'):
        load_tool('train').main([cfg, '--work-dir', str(tmp_path / 'w')])
    runner = load_tool('train').main([cfg, '--work-dir', str(tmp_path / 'w'),
                                      '--allow-partial'])
    assert runner.iter == 4
