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

    On ``load_from`` (``tools/test.py``'s CHECKPOINT) and on resume it also
    checks that the checkpoint belongs to the model (same state-dict keys
    and shapes), so a checkpoint from another model fails with the keys
    that differ instead of a partial load that leaves weights random.
    ``allow_partial=True`` (``--allow-partial`` in the tools) lets
    ``load_from`` load what matches (as mmengine does, with a warning);
    resuming always needs the same model.

    ``tools/train.py`` and ``tools/test.py`` add it to every config.

    Args:
        allow_partial (bool): let ``load_from`` leave model keys unloaded.
            Defaults to False.
    """

    priority = 'LOWEST'  # see everything other hooks add before saving

    def __init__(self, allow_partial: bool = False):
        self.allow_partial = allow_partial

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
        elif not self.allow_partial:
            check_same_model(runner.model, checkpoint, resume=False)


def check_same_model(model, checkpoint: dict, resume: bool = True) -> None:
    """Raise if ``checkpoint['state_dict']`` (or a bare state dict) is
    not ``model``'s: keys missing or unexpected (``module.`` prefixes and a
    missing ``num_batches_tracked`` aside, as mmengine loads them) or of
    another shape."""
    if is_model_wrapper(model):
        model = model.module
    doing = 'cannot resume' if resume else 'cannot load the checkpoint'
    state = checkpoint.get('state_dict', None if resume else checkpoint)
    if not isinstance(state, dict):
        raise KeyError(f'{doing}: the checkpoint has no "state_dict" '
                       f'(keys: {sorted(map(str, checkpoint))})')
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {
        k.removeprefix('module.'): tuple(getattr(v, 'shape', ()))
        for k, v in state.items()
    }
    missing = sorted(k for k in set(ours) - set(theirs)
                     if not k.endswith('num_batches_tracked'))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(f'{k}: model {ours[k]} vs checkpoint {theirs[k]}'
                    for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if missing or unexpected or shapes:
        advice = ('To start from other weights use load_from without '
                  '--resume.' if resume else
                  'To load only the matching weights on purpose pass '
                  '--allow-partial (tools/train.py, tools/test.py) or set '
                  "dict(type='WeightsOnlyCheckpointHook', "
                  'allow_partial=True) in custom_hooks.')
        raise ValueError(
            f'{doing}: the checkpoint is not from this model '
            f'({len(missing)} keys missing, {len(unexpected)} unexpected, '
            f'{len(shapes)} of other shape). Missing: {_head(missing)}; '
            f'unexpected: {_head(unexpected)}; shapes: {_head(shapes)}. '
            + advice)


def _head(items, n=5):
    more = f' ... (+{len(items) - n})' if len(items) > n else ''
    return ', '.join(items[:n]) + more if items else 'none'
