# Copyright (c) mmbcn contributors. All rights reserved.
"""Remote checkpoints (``http://``, ``https://``): downloaded once into a
cache keyed by the whole URL, then read with ``weights_only=True``.

mmengine's ``load_from_http`` goes through ``torch.hub``, which unpickles
without ``weights_only`` and caches by file name (two URLs ending in the
same name share one file). Here the cache file is
``<torch hub dir>/mmbcn/<sha256 of the URL>-<file name>``, and a download
appears there only once complete (temporary file, then rename).
"""
import hashlib
import os
import os.path as osp
import re
import shutil
import urllib.parse
import urllib.request
from typing import Any

from mmengine.dist import barrier, get_dist_info

from mmbcn.utils import atomic_outputs
from .weights_only_load import CheckpointLoadError, load_weights_only


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


def download(url: str, timeout: float = 60) -> str:
    """``url``'s cache file, downloaded unless present."""
    path = cache_path(url)
    if osp.isfile(path):
        return path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                atomic_outputs(path) as (tmp, ):
            with open(tmp, 'wb') as f:
                shutil.copyfileobj(response, f, 1 << 20)
            expected = response.headers.get('Content-Length')
            if expected is not None and os.path.getsize(tmp) != int(expected):
                raise CheckpointLoadError(
                    f'{url}: download incomplete ({os.path.getsize(tmp)} of '
                    f'{expected} bytes)')
    except OSError as err:  # URLError, HTTPError, timeouts
        raise CheckpointLoadError(
            f'{url}: download failed ({err}). Download it yourself and '
            'pass the local path instead') from err
    return path


def load_remote(url: str, map_location: Any = None) -> Any:
    """The checkpoint at ``url``, read with ``weights_only=True`` from the
    cache. In a distributed run rank 0 downloads first."""
    rank, world_size = get_dist_info()
    if rank == 0:
        path = download(url)
    if world_size > 1:
        barrier()
        if rank > 0:
            path = download(url)  # another node: its own cache
    return load_weights_only(path, map_location, name=url)
