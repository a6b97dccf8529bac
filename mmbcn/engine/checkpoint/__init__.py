# Copyright (c) mmbcn contributors. All rights reserved.
"""Checkpoints that are saved and loaded with
``torch.load(weights_only=True)``: unpickling runs no code from a file.

* :mod:`.plain_state`: what mmengine stores that weights-only loading
  refuses (numpy, ``Counter``, ``HistoryBuffer``, ...) as plain data;
* :mod:`.load`: reading one file (:func:`load_weights_only`);
* :mod:`.model_weights`: a checkpoint into a model, every key checked
  (:func:`load_model_weights`);
* :mod:`.remote`: ``http(s)://`` downloads, cached by URL;
* :mod:`.schemes`: every scheme of mmengine's ``CheckpointLoader``
  re-registered with those loaders (on import);
* :mod:`.resume`: which checkpoint ``--resume`` continues from;
* the hooks (registered on import): ``WeightsOnlyCheckpointHook``
  (:mod:`.weights_only_hook`: saves plain data, checks ``load_from``) and
  ``SafeCheckpointHook`` (:mod:`.safe_save_hook`: the previous checkpoint
  is kept until the new one loads).
"""
from . import schemes  # noqa: F401  (replaces mmengine's loaders)
from .load import CheckpointLoadError, UnsafeCheckpointError, load_weights_only
from .model_weights import load_model_weights
from .resume import find_resume_checkpoint
from .safe_save_hook import SafeCheckpointHook
from .weights_only_hook import WeightsOnlyCheckpointHook

__all__ = [
    'load_weights_only', 'load_model_weights', 'find_resume_checkpoint',
    'CheckpointLoadError', 'UnsafeCheckpointError',
    'WeightsOnlyCheckpointHook', 'SafeCheckpointHook'
]
