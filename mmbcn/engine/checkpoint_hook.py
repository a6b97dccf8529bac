# Copyright (c) mmbcn contributors. All rights reserved.
"""Checkpoints that load with ``torch.load(weights_only=True)``."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .plain_state import decode, encode


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Save mmengine checkpoints as plain data and restore them on load.

    torch >= 2.6 loads files with ``weights_only=True``, which refuses the
    numpy, ``Counter`` and ``HistoryBuffer`` objects mmengine puts into its
    checkpoints, so ``load_from``, ``--resume`` and ``tools/test.py`` would
    fail on them. This hook keeps the protection on: before saving it
    rewrites those objects as tagged tensors and primitives
    (:mod:`mmbcn.engine.plain_state`), after loading it restores them.

    On resume it also checks that the checkpoint belongs to the model being
    trained (same state-dict keys and shapes), so a checkpoint from another
    model fails with the keys that differ instead of a partial load.

    ``tools/train.py`` and ``tools/test.py`` add it to every config.
    """

    priority = 'LOWEST'  # see everything other hooks add before saving

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        plain = encode(dict(checkpoint))
        checkpoint.clear()
        checkpoint.update(plain)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        restored = decode(dict(checkpoint))
        checkpoint.clear()
        checkpoint.update(restored)
        if getattr(runner, '_resume', False):
            check_same_model(runner.model, checkpoint)


def check_same_model(model, checkpoint: dict) -> None:
    """Raise if ``checkpoint['state_dict']`` is not ``model``'s."""
    if is_model_wrapper(model):
        model = model.module
    if 'state_dict' not in checkpoint:
        raise KeyError('cannot resume: the checkpoint has no "state_dict" '
                       f'(keys: {sorted(checkpoint)})')
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {
        k.removeprefix('module.'): tuple(v.shape)
        for k, v in checkpoint['state_dict'].items()
    }
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(f'{k}: model {ours[k]} vs checkpoint {theirs[k]}'
                    for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if missing or unexpected or shapes:
        raise ValueError(
            'cannot resume: the checkpoint is not from this model '
            f'({len(missing)} keys missing, {len(unexpected)} unexpected, '
            f'{len(shapes)} of other shape). Missing: {_head(missing)}; '
            f'unexpected: {_head(unexpected)}; shapes: {_head(shapes)}. '
            'To start from other weights use load_from without --resume.')


def _head(items, n=5):
    more = f' ... (+{len(items) - n})' if len(items) > n else ''
    return ', '.join(items[:n]) + more if items else 'none'
