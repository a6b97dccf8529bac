# Copyright (c) mmbcn contributors. All rights reserved.
"""What ``tools/train.py`` and ``tools/test.py`` add to every config."""
import json
import logging
import numbers
import os
import os.path as osp
import sys
import warnings
from typing import Iterable

from mmengine.logging import print_log
from mmengine.registry import DATASETS, DefaultScope

from mmbcn.utils.config_tree import child_path, walk_dicts


def add_weights_only_checkpoints(cfg, allow_partial: bool = False) -> None:
    """Make the run's checkpoints loadable with weights_only=True
    (``WeightsOnlyCheckpointHook``, which also refuses a ``load_from`` that
    leaves model keys unloaded unless ``allow_partial``), and save them
    with ``SafeCheckpointHook`` (the old checkpoint is deleted only after
    the new one is complete) where the config uses mmengine's
    ``CheckpointHook``."""
    hooks = list(cfg.get('custom_hooks') or [])
    ours = [h for h in hooks if h.get('type') == 'WeightsOnlyCheckpointHook']
    if not ours:
        hooks.append(dict(type='WeightsOnlyCheckpointHook'))
        ours = hooks[-1:]
    if allow_partial:
        for hook in ours:
            hook['allow_partial'] = True
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is not None and checkpoint.get('type') in (
            'CheckpointHook', 'mmengine.CheckpointHook'):
        checkpoint['type'] = 'SafeCheckpointHook'


def write_results_on_main_process(cfg) -> None:
    """Have mmengine's logger hook (``default_hooks.logger``, mmengine's
    ``LoggerHook`` or the default) write the test metrics file from the
    main process only (:class:`MainProcessLoggerHook`)."""
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = {}
    hooks = cfg.default_hooks
    if 'logger' not in hooks:
        hooks['logger'] = dict(type='MainProcessLoggerHook')
    elif isinstance(hooks['logger'], dict) and hooks['logger'].get(
            'type') in ('LoggerHook', 'mmengine.LoggerHook'):
        hooks['logger']['type'] = 'MainProcessLoggerHook'


def check_train_cfg(cfg) -> None:
    """Refuse a training length or validation interval that is not a whole
    number >= 1 (``train_cfg.max_iters=-5`` would train nothing and exit
    0), naming the key."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs', 'val_interval'):
        if key not in train_cfg:
            continue
        value = train_cfg[key]
        if isinstance(value, bool) or not isinstance(
                value, numbers.Integral) or value < 1:
            raise ValueError(
                f'train_cfg.{key}={value!r} must be a whole number >= 1; '
                f'set it in the config or with --cfg-options '
                f'train_cfg.{key}=N')


def prepare_and_check_data(cfg, loaders: Iterable[str]) -> None:
    """Generate bundled demo data where a dataset type can, then make sure
    every path a dataset reads exists, before any model is built. A local
    COCO annotation file of an mmdet ``CocoDataset`` is read once (by the
    first process) to refuse one that is not COCO and to report what mmdet
    would drop from it without a word.

    Raises FileNotFoundError naming the config key and the path, or
    ValueError naming the key, the annotation file and what is wrong.
    """
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')), \
            DATASETS.switch_scope_and_registry(None) as registry:
        for loader in loaders:
            if cfg.get(loader) is None:
                continue
            # the dataset and those it wraps
            for where, ds in walk_dicts(cfg[loader]['dataset'],
                                        f'{loader}.dataset',
                                        keys=('dataset', 'datasets')):
                _check_one(registry, where, ds, cfg.get('launcher'))


def _check_one(registry, where, ds, launcher=None) -> None:
    cls = registry.get(ds['type']) if isinstance(ds.get('type'),
                                                 str) else ds.get('type')
    if cls is None:
        from mmbcn.datasets import _MODULE_OF
        module = _MODULE_OF.get(ds['type'])
        hint = (f"add 'mmbcn.datasets.{module}' to custom_imports"
                if module else 'import the module that registers it in '
                'custom_imports')
        raise KeyError(f'{where}.type: {ds["type"]!r} is not registered in '
                       f'the {registry.scope!r} DATASETS registry: {hint}')
    data_root = ds.get('data_root') or ''
    if hasattr(cls, 'ensure_data') and data_root:
        # the data the config asks for (the shapes data's variant)
        variant = {'variant': ds['variant']} if ds.get('variant') else {}
        cls.ensure_data(data_root, **variant)
    if ds.get('dataset') is not None or ds.get('datasets') is not None:
        return  # a wrapper: its inner datasets are checked
    paths = []
    if data_root:
        paths.append(('data_root', data_root))
    if ds.get('ann_file'):
        paths.append(('ann_file', osp.join(data_root, ds['ann_file'])))
    for key, sub in (ds.get('data_prefix') or {}).items():
        if isinstance(sub, str) and sub:
            paths.append((f'data_prefix.{key}', osp.join(data_root, sub)))
    for key, path in paths:
        if not osp.exists(path):
            raise FileNotFoundError(
                f'{where}.{key}: {path!r} does not exist. Prepare the '
                'dataset (README, "Data") or point the config at it, e.g. '
                f"--cfg-options {where}.data_root=/path/to/data/")
    if ds.get('ann_file') and is_first_process(launcher):
        _check_coco_file(where, cls, ds, osp.join(data_root, ds['ann_file']))


def is_first_process(launcher: str) -> bool:
    """Whether this process is rank 0 of the job (read from the
    launcher's environment: the process group may not exist yet)."""
    if launcher in (None, 'none'):
        return True
    rank = os.environ.get('RANK') or os.environ.get('SLURM_PROCID') or \
        os.environ.get('OMPI_COMM_WORLD_RANK') or '0'
    return rank == '0'


def _check_coco_file(where: str, cls, ds, path: str) -> None:
    """For an mmdet ``CocoDataset`` (or subclass) with a local annotation
    file: refuse a file that is not COCO (naming the key, the annotation
    and its image), and report once what mmdet will drop from it without
    a word (:mod:`mmbcn.datasets.coco_checks`). Datasets that report it
    themselves (the shapes demo) are left to do so."""
    datasets = sys.modules.get('mmdet.datasets')
    if (datasets is None or not isinstance(cls, type)
            or not issubclass(cls, datasets.CocoDataset)
            or getattr(cls, 'reports_dropped_annotations', False)
            or not osp.isfile(path)):
        return
    # here, not at the top: ``import mmbcn`` loads no dataset module
    from mmbcn.datasets.coco_checks import (coco_structure_problem,
                                            dropped_annotations,
                                            dropped_message)
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f'{where}.ann_file: {path!r} is not valid JSON '
                         f'({err}): truncated or not an annotation '
                         'file') from err
    problem = coco_structure_problem(content)
    if problem:
        raise ValueError(f'{where}.ann_file: {path!r} {problem}')
    classes = (ds.get('metainfo') or {}).get('classes') or getattr(
        cls, 'METAINFO', {}).get('classes', ())
    message = dropped_message(path, dropped_annotations(content, classes),
                              classes)
    if message:
        warnings.warn(message, stacklevel=2)
        print_log(message, logger='current', level=logging.WARNING)


def _init_cfgs(model):
    """(where, init_cfg) for every init_cfg in a model config."""
    for where, node in walk_dicts(model, 'model'):
        init = node.get('init_cfg')
        for one in (init if isinstance(init, list) else [init]):
            if isinstance(one, dict):
                yield child_path(where, 'init_cfg'), one


def _how_to_get(path: str) -> str:
    """Advice for a missing pretrained checkpoint: the config whose
    training writes it (``work_dirs/<config name>/iter_N.pth``), else the
    converter for the authors' ImageNet models."""
    name = osp.basename(osp.dirname(path))
    for folder in ('configs/pretrain', 'configs'):
        config = osp.join(folder, f'{name}.py')
        if name and osp.isfile(config):
            return (f'It is written by training {config}: run tools/train.py '
                    f'{config} (or tools/demo.py --pretrained, which trains '
                    'and caches the demo backbones)')
    return ("If it is one of the authors' ImageNet models, convert it with "
            'tools/model_converters/official_bcn.py (README, "Model zoo")')


def check_checkpoint_paths(cfg) -> None:
    """Local pretrained checkpoints (init_cfg) and ``load_from`` must exist
    before a run starts; the error says how to get or skip them."""
    for where, init in _init_cfgs(cfg.get('model')):
        path = init.get('checkpoint')
        if (init.get('type') == 'Pretrained' and isinstance(path, str)
                and '://' not in path and not osp.isfile(path)):
            raise FileNotFoundError(
                f'{where}.checkpoint: {path!r} does not exist. '
                f'{_how_to_get(path)}, or train from scratch with '
                f'--cfg-options {where}=None')
    load_from = cfg.get('load_from')
    if (isinstance(load_from, str) and '://' not in load_from
            and not osp.isfile(load_from)):
        raise FileNotFoundError(f'load_from: {load_from!r} does not exist')


def load_tool_config(config: str, launcher: str, cfg_options=None,
                     work_dir=None):
    """Load ``config`` as tools/train.py and tools/test.py do: apply
    ``--cfg-options``, the launcher and the work directory (default
    ``work_dirs/<config name>``). Its text is formatted once per content
    (:mod:`.config_text`)."""
    from mmengine.config import Config

    from .config_text import formatted_once
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} not found')
    cfg = formatted_once(Config.fromfile(config))
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg
