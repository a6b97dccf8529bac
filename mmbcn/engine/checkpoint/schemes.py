# Copyright (c) mmbcn contributors. All rights reserved.
"""Every checkpoint scheme of mmengine's ``CheckpointLoader`` (local files,
``http(s)://``, ``open-mmlab://``, ``torchvision://``, ``mmcls://``,
``s3://``, ``pavi://``) re-registered on ``import mmbcn`` with loaders
that read with ``weights_only=True`` (:mod:`.load`) and
download into a cache keyed by the URL (:mod:`.remote`).

``Runner``'s ``load_from`` and ``resume``, ``init_cfg=dict(type=
'Pretrained')`` and ``mmengine.runner.load_checkpoint`` all load through
``CheckpointLoader``, so this covers them in every tool and in mmdet's /
mmseg's own tools run with ``custom_imports=dict(imports=['mmbcn'])``.
"""
import io
import json
import logging
import os.path as osp
import tempfile

import mmengine
from mmengine.logging import print_log
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from .load import load_weights_only
from .remote import load_remote


def load_from_local(filename, map_location=None):
    return load_weights_only(filename, map_location)


def load_from_http(filename, map_location=None):
    return load_remote(filename, map_location)


def load_from_torchvision(filename, map_location=None):
    prefix = 'modelzoo://' if filename.startswith('modelzoo://') else \
        'torchvision://'
    name = filename[len(prefix):]
    json_path = osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json')
    with open(json_path) as f:
        urls = json.load(f)
    if name not in urls:
        try:  # newer names ('ResNet50_Weights.IMAGENET1K_V1') need torchvision
            urls = mm_checkpoint.get_torchvision_models()
        except Exception as err:
            raise KeyError(f'{filename}: unknown model name (known without '
                           f'torchvision: {sorted(urls)})') from err
        if name not in urls:
            raise KeyError(f'{filename}: unknown torchvision model name')
    return load_remote(urls[name], map_location)


def load_from_openmmlab(filename, map_location=None):
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') else \
        'openmmlab://'
    name = filename[len(prefix):]
    deprecated = mm_checkpoint.get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}{name} is deprecated in favor of '
                  f'{prefix}{deprecated[name]}', logger='current',
                  level=logging.WARNING)
        name = deprecated[name]
    urls = mm_checkpoint.get_external_models()
    if name not in urls:
        raise KeyError(f'{filename}: unknown model name')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_remote(url, map_location)
    return load_weights_only(
        osp.join(mm_checkpoint._get_mmengine_home(), url), map_location)


def load_from_mmcls(filename, map_location=None):
    url = mm_checkpoint.get_mmcls_models()[filename[len('mmcls://'):]]
    return mm_checkpoint._process_mmcls_checkpoint(
        load_remote(url, map_location))


def load_from_ceph(filename, map_location=None, backend='petrel'):
    backend = mmengine.fileio.get_file_backend(
        filename, backend_args={'backend': backend})
    return load_weights_only(io.BytesIO(backend.get(filename)),
                             map_location, name=filename)


def load_from_pavi(filename, map_location=None):
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return load_weights_only(path, map_location, name=filename)


LOADERS = {
    '': load_from_local,
    'http://': load_from_http,
    'https://': load_from_http,
    'modelzoo://': load_from_torchvision,
    'torchvision://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    r'(\S+\:)?s3://': load_from_ceph,
    r'(\S+\:)?petrel://': load_from_ceph,
    'pavi://': load_from_pavi,
}


def register_weights_only_schemes() -> None:
    """Replace mmengine's loaders; a scheme registered by someone else and
    unknown here is refused rather than left to load without
    ``weights_only``."""
    for prefix, loader in LOADERS.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    for prefix in list(CheckpointLoader._schemes):
        if prefix not in LOADERS:
            CheckpointLoader.register_scheme(
                prefix, _refuse(prefix), force=True)


def _refuse(prefix):

    def load_from_unknown_scheme(filename, map_location=None):
        raise ValueError(
            f'{filename}: no weights-only loader for the scheme {prefix!r}; '
            'download the file and pass a local path')

    return load_from_unknown_scheme


register_weights_only_schemes()
