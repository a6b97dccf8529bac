# Copyright (c) mmbcn contributors. All rights reserved.
from . import checkpoint_schemes  # noqa: F401  (weights-only loading)
from .checkpoint_hook import WeightsOnlyCheckpointHook
from .cpu_distributed import (CPUDistributedDataParallel,
                              prepare_cpu_distributed)
from .logger_hook import MainProcessLoggerHook
from .resume_checkpoint import find_resume_checkpoint
from .safe_checkpoint_hook import SafeCheckpointHook
from .show_predictions import enable_show_dir
from .singularity_hook import SingularityHook
from .tensorboard import add_tensorboard, check_tensorboard
from .tool_setup import (add_weights_only_checkpoints, check_checkpoint_paths,
                         check_train_cfg, is_first_process, load_tool_config,
                         prepare_and_check_data, write_results_on_main_process)
from .update_rate_hook import BCNUpdateRateHook, estimate_layers
from .weights_only_load import (CheckpointLoadError, UnsafeCheckpointError,
                                load_weights_only)
from .work_dir_lock import WorkDirBusyError, work_dir_lock

__all__ = [
    'BCNUpdateRateHook', 'estimate_layers', 'WeightsOnlyCheckpointHook',
    'CPUDistributedDataParallel', 'prepare_cpu_distributed',
    'add_weights_only_checkpoints', 'prepare_and_check_data',
    'check_checkpoint_paths', 'load_tool_config',
    'SingularityHook', 'enable_show_dir', 'add_tensorboard',
    'check_tensorboard', 'SafeCheckpointHook', 'find_resume_checkpoint',
    'CheckpointLoadError', 'UnsafeCheckpointError', 'load_weights_only',
    'MainProcessLoggerHook', 'write_results_on_main_process',
    'check_train_cfg', 'WorkDirBusyError', 'work_dir_lock',
    'is_first_process'
]
