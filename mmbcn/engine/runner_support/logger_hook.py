# Copyright (c) mmbcn contributors. All rights reserved.
"""mmengine's LoggerHook, with the test metrics written by one process."""
from mmengine.dist import is_main_process
from mmengine.hooks import LoggerHook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class MainProcessLoggerHook(LoggerHook):
    """:class:`mmengine.hooks.LoggerHook` (same arguments) whose test
    metrics file (``WORK_DIR/TIMESTAMP/TIMESTAMP.json``) is written by the
    main process only.

    mmengine's hook dumps that file on every process of a distributed
    test, all to the same path, so two processes can interleave their
    writes and leave a corrupt file (``{...}7}``). Every process holds the
    same collected metrics, so the main process's file is the whole
    result. ``tools/train.py`` and ``tools/test.py`` use it for
    ``default_hooks.logger``; other tools can set ``default_hooks =
    dict(logger=dict(type='MainProcessLoggerHook', ...))``.
    """

    def after_test_epoch(self, runner, metrics=None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)
