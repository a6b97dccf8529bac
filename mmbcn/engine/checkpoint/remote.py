# Copyright (c) mmbcn contributors. All rights reserved.
"""Remote checkpoints (``http://``, ``https://``): downloaded once into a
cache keyed by the whole URL, then read with ``weights_only=True``.

mmengine's ``load_from_http`` goes through ``torch.hub``, which unpickles
without ``weights_only`` and caches by file name (two URLs ending in the
same name share one file). Here the cache file is
``<torch hub dir>/mmbcn/<sha256 of the URL>-<file name>``, and a download
appears there only once complete and loadable (temporary file, checked,
then renamed); ``$MMBCN_DOWNLOAD_TIMEOUT`` bounds each download.
"""
import contextlib
import hashlib
import http.client
import math
import os
import os.path as osp
import re
import socket
import threading
import urllib.parse
import urllib.request
import warnings
from typing import Any

from mmengine.dist import barrier, get_dist_info

from mmbcn.utils import atomic_outputs, remove_stale_temporaries
from .load import CheckpointLoadError, UnsafeCheckpointError, load_weights_only


def cache_dir() -> str:
    """Where downloads go: ``$MMBCN_CHECKPOINT_CACHE``, else ``mmbcn/`` in
    torch's hub directory (``$TORCH_HOME/hub``)."""
    import torch
    return os.environ.get('MMBCN_CHECKPOINT_CACHE') or osp.join(
        torch.hub.get_dir(), 'mmbcn')


def cache_path(url: str) -> str:
    """The cache file of ``url``: a digest of the whole URL, then the file
    name for readers."""
    digest = hashlib.sha256(url.encode('utf-8')).hexdigest()[:32]
    name = osp.basename(urllib.parse.urlparse(url).path) or 'checkpoint'
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name)[-100:]
    return osp.join(cache_dir(), f'{digest}-{name}')


DEFAULT_DOWNLOAD_TIMEOUT = 3600.0


def download_timeout() -> float:
    """The most seconds one download may take in all:
    ``$MMBCN_DOWNLOAD_TIMEOUT``, else one hour."""
    text = os.environ.get('MMBCN_DOWNLOAD_TIMEOUT')
    if not text:
        return DEFAULT_DOWNLOAD_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float('nan')
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f'MMBCN_DOWNLOAD_TIMEOUT={text!r} must be a number '
                         'of seconds > 0 (the longest a download may take)')
    return seconds


def download(url: str, timeout: float = 60) -> str:
    """``url``'s cache file, downloaded unless present.

    The download goes to a temporary file beside the cache file; it is
    renamed into place only when complete (``Content-Length`` bytes, if
    the server sends it) and loadable with ``weights_only=True``, so the
    cache never holds a cut-short download, a web page or a refused file.
    ``timeout`` bounds each network operation, ``$MMBCN_DOWNLOAD_TIMEOUT``
    (default one hour) the whole download. Every error names the URL and
    the cache file.
    """
    path = cache_path(url)
    if osp.isfile(path):
        return path
    where = f'{url} (cache file {path})'
    overall = download_timeout()
    # what a killed download of this URL left (a live one holds a lock)
    name, ext = osp.splitext(osp.basename(path))
    remove_stale_temporaries(
        cache_dir(), rf'\.{re.escape(name + ext)}\.[^.]+\.part'
        rf'{re.escape(ext)}')
    try:
        with atomic_outputs(path) as (tmp, ):
            _fetch(url, tmp, timeout, overall, where)
            try:
                load_weights_only(tmp, 'cpu', name=where, mmap=True)
            except CheckpointLoadError as err:
                raise type(err)(
                    f'{err} (the download was not kept in the cache)'
                ) from err
    except (OSError, http.client.HTTPException) as err:  # URLError, ...
        raise CheckpointLoadError(
            f'{where}: download failed ({type(err).__name__}: {err}); '
            'nothing was cached. Download it yourself and pass the local '
            'path instead') from err
    return path


def _fetch(url: str, tmp: str, timeout: float, overall: float,
           where: str) -> None:
    """Write ``url``'s body to ``tmp``; raise if it is cut short, a web
    page, or takes more than ``overall`` seconds."""
    watchdog = _Watchdog(overall)
    try:
        try:
            response = _opener(watchdog).open(url, timeout=timeout)
        except (OSError, http.client.HTTPException):
            if watchdog.expired:
                raise _timed_out(where, overall) from None
            raise
        with response, open(tmp, 'wb') as f:
            kind = response.headers.get('Content-Type') or ''
            if kind.split(';')[0].strip().lower() == 'text/html':
                raise CheckpointLoadError(
                    f'{where}: the server sent a web page ({kind}), not a '
                    'checkpoint (a login or error page?); nothing was '
                    'cached')
            expected = response.headers.get('Content-Length')
            try:
                for chunk in iter(lambda: response.read(1 << 16), b''):
                    f.write(chunk)
            except (OSError, http.client.HTTPException):
                if not watchdog.expired:
                    raise
            if watchdog.expired:
                raise _timed_out(where, overall)
            size = f.tell()
        if expected is not None and expected.isdigit() and \
                size != int(expected):
            raise CheckpointLoadError(
                f'{where}: download incomplete ({size} of {expected} '
                'bytes); nothing was cached')
    finally:
        watchdog.cancel()


def _timed_out(where: str, overall: float) -> CheckpointLoadError:
    return CheckpointLoadError(
        f'{where}: the download took longer than {overall:g} s in all and '
        'was stopped; nothing was cached. Set MMBCN_DOWNLOAD_TIMEOUT '
        '(seconds) higher on a slow link, or download it yourself and pass '
        'the local path')


class _Watchdog:
    """Shuts the download's sockets down after ``seconds``: a read that
    waits on a server sending a byte now and then returns at once."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def add(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies, redirects as usual) whose connections
    register their sockets with ``watchdog``."""

    class Connection(http.client.HTTPConnection):

        def connect(self):
            super().connect()
            watchdog.add(self.sock)

    class SecureConnection(http.client.HTTPSConnection):

        def connect(self):
            super().connect()
            watchdog.add(self.sock)

    class Handler(urllib.request.HTTPHandler):

        def http_open(self, req):
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):

        def https_open(self, req):
            return self.do_open(SecureConnection, req, context=self._context)

    return urllib.request.build_opener(Handler, SecureHandler)


def load_remote(url: str, map_location: Any = None) -> Any:
    """The checkpoint at ``url``, read with ``weights_only=True`` from the
    cache. In a distributed run rank 0 downloads first."""
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download_loadable(url)
    if world_size > 1:
        barrier()
        if rank > 0:
            path = download(url)  # another node: its own cache
    return load_weights_only(path, map_location,
                             name=f'{url} (cache file {path})')


def _download_loadable(url: str) -> str:
    """The cache file of ``url``; one that does not load (left by an older
    mmbcn, or damaged since) is replaced by a new download."""
    path = download(url)
    try:
        load_weights_only(path, 'cpu', mmap=True)
    except UnsafeCheckpointError:
        pass  # the load below refuses it, naming the URL and the file
    except CheckpointLoadError as err:
        warnings.warn(f'{url}: the cache file {path} does not load ({err}); '
                      'downloading it again', stacklevel=3)
        os.unlink(path)
        path = download(url)
    return path
