# Copyright (c) mmbcn contributors. All rights reserved.
"""What mmbcn's tools need from mmengine 0.10's Runner beyond what it does,
none of it specific to BCN:

* :mod:`.tool_setup`: what ``tools/train.py`` and ``tools/test.py`` add to
  and check in every config (data paths, checkpoint hooks, training
  length, pretrained checkpoints);
* :mod:`.cpu_distributed`: multi-process training without CUDA (gloo;
  registers ``CPUDistributedDataParallel``);
* :mod:`.logger_hook`: test metrics written by one process
  (registers ``MainProcessLoggerHook``);
* :mod:`.tensorboard`: ``--tensorboard``;
* :mod:`.show_predictions`: ``--show-dir``;
* :mod:`.work_dir_lock`: one training run per work directory;
* :mod:`.config_text`: a config's text formatted once, not at every
  read.
"""
from .config_text import FormattedOnceConfig, formatted_once
from .cpu_distributed import (CPUDistributedDataParallel,
                              prepare_cpu_distributed)
from .logger_hook import MainProcessLoggerHook
from .show_predictions import enable_show_dir
from .tensorboard import add_tensorboard, check_tensorboard
from .tool_setup import (add_weights_only_checkpoints, check_checkpoint_paths,
                         check_train_cfg, is_first_process, load_tool_config,
                         prepare_and_check_data, write_results_on_main_process)
from .work_dir_lock import WorkDirBusyError, work_dir_lock

__all__ = [
    'add_weights_only_checkpoints', 'check_checkpoint_paths',
    'check_train_cfg', 'is_first_process', 'load_tool_config',
    'prepare_and_check_data', 'write_results_on_main_process',
    'prepare_cpu_distributed', 'CPUDistributedDataParallel',
    'MainProcessLoggerHook', 'enable_show_dir', 'add_tensorboard',
    'check_tensorboard', 'WorkDirBusyError', 'work_dir_lock',
    'FormattedOnceConfig', 'formatted_once'
]
