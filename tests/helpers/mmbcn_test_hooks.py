"""Hooks that tests load into real training runs (custom_imports)."""
import os.path as osp

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmbcn.ops import BatchChannelNorm


@HOOKS.register_module()
class ReseedEveryIterHook(Hook):
    """Seed torch and numpy from the iteration number, so that a resumed
    run draws the same random numbers as an uninterrupted one."""
    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        torch.manual_seed(1000 + runner.iter)
        np.random.seed(1000 + runner.iter)


@HOOKS.register_module()
class DumpBCNStatisticsHook(Hook):
    """After training, every rank writes its BCN statistics to
    ``work_dir/bcn_rank{rank}.pt``."""

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        stats = {
            f'{name}.{buf}': getattr(m, buf).clone()
            for name, m in model.named_modules()
            if isinstance(m, BatchChannelNorm)
            for buf in ('running_mean', 'running_var')
        }
        torch.save(stats, osp.join(runner.work_dir,
                                   f'bcn_rank{runner.rank}.pt'))


@HOOKS.register_module()
class KeepInitialStateHook(Hook):
    """Keep a copy of the model's state before the first iteration on the
    runner (``runner.initial_state``), so that tests can compare the
    updates training made."""

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        runner.initial_state = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }
