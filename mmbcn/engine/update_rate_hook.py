# Copyright (c) mmbcn contributors. All rights reserved.
"""Drive Algorithm 1's update rate from the learning rate (paper Sec. 3.2:
"we set the update rate r to be the learning rate of trainable
parameters")."""
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from ..cnn.bcn import BatchChannelNorm


def estimate_layers(model) -> List[BatchChannelNorm]:
    """Every BCN layer of ``model`` in micro-batch (estimate) mode."""
    if is_model_wrapper(model):
        model = model.module
    return [
        m for m in model.modules()
        if isinstance(m, BatchChannelNorm) and m.estimate
    ]


@HOOKS.register_module()
class BCNUpdateRateHook(Hook):
    """Before every training iteration, set each estimate-mode BCN layer's
    ``update_rate`` to ``multiplier`` times the current learning rate of the
    parameter group that holds the layer's parameters (the first group if
    the layer is not optimized), so warm-up and decay move r with the lr.

    Add it with ``custom_hooks=[dict(type='BCNUpdateRateHook')]``.

    Args:
        multiplier (float): r = multiplier * lr. Default 1.0.
    """

    priority = 'NORMAL'

    def __init__(self, multiplier: float = 1.0):
        if multiplier <= 0:
            raise ValueError(
                f'BCNUpdateRateHook: multiplier={multiplier} must be > 0')
        self.multiplier = multiplier
        self._layers: Optional[List[BatchChannelNorm]] = None

    def before_train(self, runner) -> None:
        self._layers = estimate_layers(runner.model)
        if self._layers:
            runner.logger.info(
                f'BCNUpdateRateHook: update_rate = {self.multiplier} x lr '
                f'for {len(self._layers)} estimate-mode BCN layers')
        else:
            runner.logger.warning(
                'BCNUpdateRateHook: the model has no BCN layer with '
                'estimate=True; the hook does nothing')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self._layers is None:
            self.before_train(runner)
        if not self._layers:
            return
        lr_of = _learning_rates(runner.optim_wrapper)
        default = next(iter(lr_of.values()))
        for layer in self._layers:
            lr = lr_of.get(id(layer.weight), default)
            layer.update_rate = self.multiplier * lr


def _learning_rates(optim_wrapper) -> Dict[int, float]:
    """Map id(parameter) -> current lr, in param-group order."""
    wrappers = (
        list(optim_wrapper.values())
        if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper])
    lr_of: Dict[int, float] = {}
    for wrapper in wrappers:
        for group in wrapper.optimizer.param_groups:
            for param in group['params']:
                lr_of.setdefault(id(param), group['lr'])
    if not lr_of:
        raise RuntimeError('BCNUpdateRateHook: the optimizer holds no '
                           'parameters to take a learning rate from')
    return lr_of
