# Copyright (c) mmbcn contributors. All rights reserved.
"""The one way mmbcn's tools load a checkpoint into a model, and the check
that a checkpoint belongs to a model (which names the keys that differ)."""
from typing import Any

from mmengine.model import is_model_wrapper

from .load import load_weights_only


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
        k: tuple(getattr(v, 'shape', ()))
        for k, v in strip_module_prefix(state).items()
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


def strip_module_prefix(state: dict) -> dict:
    """``state`` with the ``module.`` prefix that a wrapped model (DDP)
    gives its keys removed, as mmengine's ``load_checkpoint`` does by
    default (``revise_keys=[(r'^module\\.', '')]``)."""
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state.items()
    }


def model_state_dict(checkpoint: Any, name: str = 'the checkpoint') -> dict:
    """The model weights in a loaded checkpoint: its ``'state_dict'`` (as
    mmengine saves) or the checkpoint itself (a bare state dict), with
    ``module.`` prefixes removed."""
    state = (checkpoint.get('state_dict', checkpoint)
             if isinstance(checkpoint, dict) else None)
    if not isinstance(state, dict):
        raise ValueError(f'{name} holds no state dict')
    return strip_module_prefix(state)


def load_model_weights(model, path: str, map_location: Any = 'cpu') -> dict:
    """Load the checkpoint at ``path`` into ``model``, every key: read with
    ``torch.load(weights_only=True)`` (:func:`load_weights_only`, whatever
    the environment says), checked to be ``model``'s
    (:func:`check_same_model`, which names the keys that differ), then
    loaded with ``strict=True``. Returns the checkpoint as read."""
    checkpoint = load_weights_only(path, map_location=map_location)
    state = model_state_dict(checkpoint, repr(path))
    check_same_model(model, dict(state_dict=state), resume=False)
    if is_model_wrapper(model):
        model = model.module
    model.load_state_dict(state, strict=True)
    return checkpoint


def _head(items, n=5):
    more = f' ... (+{len(items) - n})' if len(items) > n else ''
    return ', '.join(items[:n]) + more if items else 'none'
