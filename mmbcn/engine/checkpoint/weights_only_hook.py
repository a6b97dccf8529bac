# Copyright (c) mmbcn contributors. All rights reserved.
"""``WeightsOnlyCheckpointHook``: checkpoints that load with
``torch.load(weights_only=True)``."""
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .model_weights import check_same_model
from .plain_state import decode, encode


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Save mmengine checkpoints as plain data and restore them on load.

    torch >= 2.6 loads files with ``weights_only=True``, which refuses the
    numpy, ``Counter`` and ``HistoryBuffer`` objects mmengine puts into its
    checkpoints, so ``load_from``, ``--resume`` and ``tools/test.py`` would
    fail on them. This hook keeps the protection on: before saving it
    rewrites those objects as tagged tensors and primitives
    (:mod:`.plain_state`), after loading it restores them.

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
