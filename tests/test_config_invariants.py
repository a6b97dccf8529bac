"""What holds for every config under configs/ (new ones included), checked
on the loaded config (its _base_ files merged in) and on the model it
builds:

* ``custom_imports`` is declared with ``allow_failed_imports=False`` and
  imports the module that registers each mmbcn name the config uses;
* the normalization layers are those the file name says (``bcn``,
  ``syncbcn``, ``gn``; none of these: BatchNorm), and with ``-ws`` the
  convolutions of every part given a ``conv_cfg`` are ``WSConv2d``;
* ``BCNUpdateRateHook`` is in ``custom_hooks`` exactly when a BCN layer
  runs on estimates (``estimate=True``);
* the model builds (without its pretrained weights, absent here);
* every file under configs/_base_/ is inherited by some config (the base
  files are checked through the configs that inherit them).

Marked slow: what the custom_imports register (a fresh interpreter per
import list) and the checks on the full-size models (every config but the
``_demo`` ones, whose small models are built in the fast selection too).
"""
import copy
import functools
import glob
import json
import os.path as osp
import re
import subprocess
import sys

import pytest
from mmengine.config import Config
from torch import nn

from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d
from mmbcn.utils import scoped_build
from tool_runner import REPO

FILES = sorted(
    glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
BASES = [p for p in FILES if '_base_' in p.split(osp.sep)]
CONFIGS = [p for p in FILES if p not in BASES]
# the configs with the small demo models; the others build full-size ones
MODEL_PARAMS = [
    pytest.param(
        p, marks=() if p.endswith('_demo.py') else pytest.mark.slow)
    for p in CONFIGS
]
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
               BatchChannelNorm)
# file name word -> the class of every normalization layer
NORMS = {
    'bcn': BatchChannelNorm,
    'syncbcn': SyncBatchChannelNorm,
    'gn': nn.GroupNorm,
}

# Prints, in a fresh interpreter, every name that an mmbcn module registers
# (in any registry of mmengine, mmcv, mmdet, mmseg) once the modules given
# are imported ('--every': all modules of the package but the op backends,
# which register nothing), with the module that defines it.
REGISTERED = """
import importlib, json, pkgutil, sys
from mmengine import registry as root

names = sys.argv[1:]
if names == ['--every']:
    import mmbcn
    names = [m.name for m in pkgutil.walk_packages(mmbcn.__path__, 'mmbcn.')
             if not m.name.startswith('mmbcn.ops.')]
for name in names:
    importlib.import_module(name)
found, todo = {}, [r for r in vars(root).values()
                   if isinstance(r, root.Registry)]
while todo:
    registry = todo.pop()
    todo.extend(registry.children.values())
    for key, obj in registry.module_dict.items():
        module = getattr(obj, '__module__', '') or ''
        if module.split('.')[0] == 'mmbcn':
            found[key] = module
print(json.dumps(found))
"""
EVERY = ('--every', )


@functools.lru_cache(maxsize=None)
def read_config(path):
    """The config as loaded, its custom_imports not imported."""
    return Config.fromfile(path, import_custom_modules=False)


def imports_of(cfg):
    return tuple((cfg.get('custom_imports') or {}).get('imports') or ())


@pytest.fixture(scope='module')
def registered_by():
    """{imports: {name: defining module}}: the mmbcn names that importing
    the modules ``imports`` registers, for the custom_imports of every
    config and for the whole package (``EVERY``), each from a fresh
    interpreter; the interpreters run side by side."""
    wanted = {imports_of(read_config(p)) for p in CONFIGS} | {EVERY}
    runs = {
        imports: subprocess.Popen(
            [sys.executable, '-c', REGISTERED, *imports], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for imports in wanted
    }
    found = {}
    for imports, run in runs.items():
        out, err = run.communicate()
        assert run.returncode == 0, f'importing {imports}: {err}'
        found[imports] = json.loads(out.splitlines()[-1])
    return found


def config_types(node):
    """Every string ``type`` in a config tree."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node['type']
        for value in node.values():
            yield from config_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from config_types(value)


def conv_cfg_parts(node, path=()):
    """(module path, conv_cfg) for every part of a model config that sets
    ``conv_cfg``."""
    if isinstance(node, dict):
        if node.get('conv_cfg') is not None:
            yield '.'.join(path), node['conv_cfg']
        for key, value in node.items():
            if key not in ('conv_cfg', 'norm_cfg', 'init_cfg', 'train_cfg',
                           'test_cfg'):
                yield from conv_cfg_parts(value, path + (str(key), ))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from conv_cfg_parts(value, path + (str(i), ))


def drop_pretrained(node):
    """Remove pretrained weights from a model config: the tests build
    models without the checkpoints, which are not in the repository."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node['init_cfg'] = None
        if node.get('pretrained') is not None:
            node['pretrained'] = None
        for value in node.values():
            drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            drop_pretrained(value)


def name_words(path):
    """The words of a config file name: ``mask-rcnn_r50_fpn_bcn-ws-all_2x_
    coco.py`` -> {'mask', 'rcnn', 'r50', 'fpn', 'bcn', 'ws', 'all', ...}."""
    stem = osp.splitext(osp.basename(path))[0]
    return set(re.split('[-_]', stem))


def normalized_convs(module):
    """The convolutions of ``module`` whose output goes into a
    normalization layer (as mmcv's ``ConvModule`` and mmdet's / mmseg's
    ResNet register them: each conv, then its norm); predictors such as
    ``conv_seg`` or ``conv_logits`` are not among them."""
    leaves = [(name, m) for name, m in module.named_modules()
              if not list(m.children()) or isinstance(m, NORM_LAYERS)]
    return [(name, m) for (name, m), (_, after) in zip(leaves, leaves[1:])
            if isinstance(m, nn.Conv2d) and isinstance(after, NORM_LAYERS)]


@pytest.fixture(scope='module', params=MODEL_PARAMS, ids=osp.basename)
def built(request):
    """(path, loaded config, its model): the config's custom_imports
    imported, the model built without pretrained weights. Module scope:
    pytest runs the tests of one config together, one model at a time."""
    cfg = Config.fromfile(request.param)
    model_cfg = copy.deepcopy(cfg.model)
    drop_pretrained(model_cfg)
    model = scoped_build(model_cfg, cfg.default_scope)
    return request.param, cfg, model


def test_every_config_is_found():
    folders = {osp.basename(osp.dirname(p)) for p in CONFIGS}
    assert folders >= {'deeplabv3', 'faster_rcnn', 'mask_rcnn'}
    assert BASES and '_base_' not in folders


@pytest.mark.parametrize('base', BASES, ids=osp.basename)
def test_every_base_file_is_inherited(base):
    # Config.text: the text of every file merged, each after its path
    users = [p for p in CONFIGS if base + '\n' in read_config(p).text]
    assert users, f'no config under configs/ inherits {base}'


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_custom_imports_are_declared(path):
    cfg = read_config(path)
    imports = cfg.get('custom_imports')
    assert imports is not None, 'no custom_imports'
    assert imports.get('allow_failed_imports') is False, (
        'custom_imports must set allow_failed_imports=False: a failed '
        'import would surface later as an unknown type')
    assert 'mmbcn' in imports_of(cfg), (
        "custom_imports must import 'mmbcn' (layers, hooks, weights-only "
        'checkpoint loading)')


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_custom_imports_register_what_the_config_uses(path, registered_by):
    cfg = read_config(path)
    names = imports_of(cfg)
    needed, provided = registered_by[EVERY], registered_by[names]
    missing = {t: needed[t] for t in set(config_types(cfg.to_dict()))
               if t in needed and t not in provided}
    assert not missing, (
        f'custom_imports {list(names)} does not register '
        + ', '.join(f'{t} (defined in {m})' for t, m in sorted(
            missing.items())))


def test_model_layers_are_what_the_file_name_says(built):
    path, cfg, model = built
    words = name_words(path)
    named = words & set(NORMS)
    assert len(named) <= 1, f'the file name names norms {sorted(named)}'
    kinds = {type(m) for m in model.modules() if isinstance(m, NORM_LAYERS)}
    if named:
        assert kinds == {NORMS[named.pop()]}, kinds
    else:  # the BatchNorm baseline
        assert kinds and all(
            issubclass(k, nn.modules.batchnorm._BatchNorm)
            for k in kinds), kinds

    ws = [m for m in model.modules() if isinstance(m, WSConv2d)]
    parts = list(conv_cfg_parts(cfg.model.to_dict()))
    if 'ws' not in words:
        assert not ws, 'WSConv2d in a model whose file name has no ws'
        return
    assert parts, 'the file name says ws but no part sets conv_cfg'
    for where, conv_cfg in parts:
        assert conv_cfg['type'] == 'WSConv', (where, conv_cfg)
        part = model.get_submodule(where)
        convs = normalized_convs(part)
        assert convs, f'{where} has no normalized convolution'
        plain = [n for n, m in convs if not isinstance(m, WSConv2d)]
        assert not plain, f'{where}: not WSConv2d: {plain}'


def test_update_rate_hook_exactly_with_estimate_mode(built):
    _, cfg, model = built
    estimate = any(
        m.estimate for m in model.modules()
        if isinstance(m, BatchChannelNorm))
    hooks = [h['type'] for h in cfg.get('custom_hooks') or []]
    assert ('BCNUpdateRateHook' in hooks) == estimate, (
        f'BCN layers with estimate=True: {estimate}; custom_hooks: {hooks}')
