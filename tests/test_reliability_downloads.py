"""Remote checkpoints: a download reaches the cache only complete and
loadable (a cut-short transfer without Content-Length, a web page or a
refused file is never cached), a server that drips bytes is stopped by the
overall timeout, and every error names the URL and the cache file. The
servers are loopback (127.0.0.1) HTTP servers (helpers/http_server.py)."""
import os
import os.path as osp
import time

import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

import mmbcn  # noqa: F401
from http_server import loopback_server, send_body, serve_bytes
from mmbcn.engine import CheckpointLoadError, UnsafeCheckpointError
from mmbcn.engine.checkpoint.remote import cache_path, download_timeout


def checkpoint_bytes(tmp_path, value=1.0) -> bytes:
    path = tmp_path / 'good.tmp'
    torch.save({'state_dict': {'w': torch.full((64, ), value)}}, path)
    return path.read_bytes()


@pytest.fixture
def server():
    with loopback_server() as httpd:
        yield httpd


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MMBCN_CHECKPOINT_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('MMBCN_DOWNLOAD_TIMEOUT', raising=False)
    return tmp_path / 'cache'


def cached_files(cache):
    return sorted(os.listdir(cache)) if cache.exists() else []


def test_cut_short_download_is_not_cached(tmp_path, server, cache):
    """No Content-Length, the connection closes halfway through the file
    the first time: the load fails naming the URL and the cache file, and
    nothing is cached; the next load gets the whole file."""
    data = checkpoint_bytes(tmp_path)

    def cut_once(handler, n):
        send_body(handler, data[:len(data) // 2] if n == 1 else data,
                  length=False)

    server.routes['/m.pth'] = cut_once
    url = server.url('/m.pth')
    with pytest.raises(CheckpointLoadError) as err:
        _load_checkpoint(url)
    assert url in str(err.value) and cache_path(url) in str(err.value)
    assert 'not kept in the cache' in str(err.value)
    assert cached_files(cache) == []
    got = _load_checkpoint(url)
    assert torch.equal(got['state_dict']['w'], torch.ones(64))
    assert cached_files(cache) == [osp.basename(cache_path(url))]


def test_download_removes_what_a_killed_download_left(
        tmp_path, server, cache):
    data = checkpoint_bytes(tmp_path)
    server.routes['/m.pth'] = serve_bytes(data)
    url = server.url('/m.pth')
    os.makedirs(cache)
    name = osp.basename(cache_path(url))
    (cache / f'.{name}.k1ll3d.part.pth').write_bytes(data[:10])
    (cache / '.other.pth.k1ll3d.part.pth').write_bytes(b'not this URL')
    _load_checkpoint(url)
    assert cached_files(cache) == ['.other.pth.k1ll3d.part.pth', name]


def test_web_page_is_named_as_one_and_not_cached(server, cache):
    page = b'<!DOCTYPE html><html><body>Please sign in</body></html>'
    server.routes['/login.pth'] = lambda h, n: send_body(h, page, 'text/html')
    server.routes['/plain.pth'] = lambda h, n: send_body(h, page)
    for path in ('/login.pth', '/plain.pth'):
        url = server.url(path)
        with pytest.raises(CheckpointLoadError) as err:
            _load_checkpoint(url)
        message = str(err.value)
        assert not isinstance(err.value, UnsafeCheckpointError)
        assert 'web page' in message and 'pickled' not in message
        assert url in message and cache_path(url) in message
    assert cached_files(cache) == []


def test_damaged_cache_file_is_downloaded_again(tmp_path, server, cache):
    data = checkpoint_bytes(tmp_path, 2.0)
    server.routes['/m.pth'] = serve_bytes(data)
    url = server.url('/m.pth')
    os.makedirs(cache)
    with open(cache_path(url), 'wb') as f:
        f.write(data[:100])  # left by an earlier, unchecked download
    with pytest.warns(UserWarning, match='does not load.*downloading it '
                      'again'):
        got = _load_checkpoint(url)
    assert torch.equal(got['state_dict']['w'], torch.full((64, ), 2.0))


def test_dripping_server_is_stopped_by_the_overall_timeout(
        server, cache, monkeypatch):
    """A server that sends one byte every 50 ms (each read succeeds, so
    the per-read timeout never fires) for at most 60 s."""

    def drip(handler, n):
        handler.send_response(200)
        handler.end_headers()
        for _ in range(1200):
            handler.wfile.write(b'x')
            handler.wfile.flush()
            time.sleep(0.05)

    server.routes['/slow.pth'] = drip
    monkeypatch.setenv('MMBCN_DOWNLOAD_TIMEOUT', '1')
    url = server.url('/slow.pth')
    with pytest.raises(CheckpointLoadError) as err:
        _load_checkpoint(url)
    message = str(err.value)
    assert 'longer than 1 s' in message and 'MMBCN_DOWNLOAD_TIMEOUT' in message
    assert url in message and cache_path(url) in message
    assert cached_files(cache) == []


@pytest.mark.parametrize('value', ['soon', '0', '-3', 'nan', 'inf'])
def test_download_timeout_setting_is_checked(monkeypatch, value):
    monkeypatch.setenv('MMBCN_DOWNLOAD_TIMEOUT', value)
    with pytest.raises(ValueError, match='MMBCN_DOWNLOAD_TIMEOUT'):
        download_timeout()


def test_unreachable_server_names_the_cache_file(cache):
    url = 'http://127.0.0.1:9/nothing-listens.pth'
    with pytest.raises(CheckpointLoadError) as err:
        _load_checkpoint(url)
    assert 'download failed' in str(err.value)
    assert cache_path(url) in str(err.value)
