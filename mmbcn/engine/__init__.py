# Copyright (c) mmbcn contributors. All rights reserved.
"""mmbcn's parts of an mmengine training run. Importing it registers every
hook, the CPU model wrapper and the weights-only checkpoint loaders.

* BCN's hooks: ``BCNUpdateRateHook`` (:mod:`.update_rate_hook`: the update
  rate of Algorithm 1 from the learning rate) and ``SingularityHook``
  (:mod:`.singularity_hook`: distance to elimination singularities);
* :mod:`.checkpoint`: checkpoints saved and loaded with
  ``torch.load(weights_only=True)``;
* :mod:`.runner_support`: what the tools need from mmengine's Runner
  beyond what it does (CPU multi-process runs, TensorBoard, ``--show-dir``,
  the work-directory lock, config set-up).

Configs name the hooks by their registered type; code imports the loading
functions from here and the tools' set-up from :mod:`.runner_support`.
"""
from . import runner_support  # noqa: F401  (registers its hook and wrapper)
from .checkpoint import (CheckpointLoadError, UnsafeCheckpointError,
                         find_resume_checkpoint, load_model_weights,
                         load_weights_only)
from .singularity_hook import SingularityHook
from .update_rate_hook import BCNUpdateRateHook

__all__ = [
    'BCNUpdateRateHook', 'SingularityHook', 'load_weights_only',
    'load_model_weights', 'find_resume_checkpoint', 'CheckpointLoadError',
    'UnsafeCheckpointError'
]
