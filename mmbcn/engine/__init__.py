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
from .checkpoint import (CheckpointLoadError, UnsafeCheckpointError,
                         find_resume_checkpoint, load_model_weights,
                         load_weights_only)
from .singularity_hook import SingularityHook
from .update_rate_hook import BCNUpdateRateHook

# The tools' set-up, whose home is runner_support (importing it registers
# MainProcessLoggerHook and CPUDistributedDataParallel), is importable from
# here too for the tools that import it from here; not part of __all__.
from .runner_support import (  # noqa: F401  isort:skip
    add_tensorboard, add_weights_only_checkpoints, check_checkpoint_paths,
    check_train_cfg, enable_show_dir, is_first_process, load_tool_config,
    prepare_and_check_data, prepare_cpu_distributed, work_dir_lock,
    write_results_on_main_process)

__all__ = [
    'BCNUpdateRateHook', 'SingularityHook', 'load_weights_only',
    'load_model_weights', 'find_resume_checkpoint', 'CheckpointLoadError',
    'UnsafeCheckpointError'
]
