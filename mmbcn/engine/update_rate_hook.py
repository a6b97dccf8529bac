# Copyright (c) mmbcn contributors. All rights reserved.
"""Drive Algorithm 1's update rate from the learning rate (paper Sec. 3.2:
"we set the update rate r to be the learning rate of trainable
parameters"), optionally with a data-driven start of the estimates."""
import math
import numbers
from typing import Dict, List, Optional, Set

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from torch.nn.parallel import DistributedDataParallel

from ..ops import BatchChannelNorm


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
    parameter group that holds the layer's ``batch_weight`` (the batch
    step's affine, Eq. 13: the step whose statistics Algorithm 1
    estimates), so warm-up and decay move r with the lr. If
    ``batch_weight`` is not optimized, ``batch_bias``'s group is used, and
    if neither is, the first group's. So ``paramwise_cfg`` keys that name
    the group step's ``weight``/``bias`` (e.g. ``'bcn.weight'``,
    ``bias_lr_mult``, which acts on parameters named ``bias``) leave r
    alone, while ``'batch_weight'`` keys (or ``lr_mult=0`` on the whole
    layer) change it.

    Add it with ``custom_hooks=[dict(type='BCNUpdateRateHook')]``.

    Beyond the paper, ``warmup_iters=T`` starts the estimates from data
    instead of from (0, 1): at iteration t = 1, ..., T the rate is
    ``max(1 / t, multiplier * lr)``, so the estimates are the cumulative
    average of the batch statistics seen so far (as BatchNorm's
    ``momentum=None``; the first batch's statistics replace the initial
    0 / 1 outright) until the paper's rate catches up; from t = T + 1 on,
    r = multiplier * lr. This is Algorithm 1 with a schedule of r; the
    layer is unchanged. ``warmup_iters=0`` is the paper's behaviour. The
    warm-up acts only on layers whose estimates are still at their
    initial state when training starts (``num_batches_tracked == 0``,
    means 0, variances 1): estimates loaded from a pretrained backbone
    (or a resumed run) are data already, and a rate of 1 would replace
    them with one micro-batch's statistics.

    Args:
        multiplier (float): r = multiplier * lr, a finite number >= 0; 0
            freezes the estimates at (0, 1) (as the authors' public code,
            whose rate defaults to 0). Default 1.0.
        warmup_iters (int): T above, a whole number >= 0. Default 0 (the
            paper).
    """

    priority = 'NORMAL'

    def __init__(self, multiplier: float = 1.0, warmup_iters: int = 0):
        self.multiplier = _check_multiplier(multiplier)
        self.warmup_iters = _check_warmup_iters(warmup_iters)
        self._layers: Optional[List[BatchChannelNorm]] = None
        self._warm: Set[int] = set()

    def before_train(self, runner) -> None:
        self._layers = estimate_layers(runner.model)
        check_buffer_broadcast(runner.model, self._layers)
        self._warm = ({id(m)
                       for m in self._layers if at_initial_state(m)}
                      if self.warmup_iters else set())
        if self._layers:
            runner.logger.info(
                f'BCNUpdateRateHook: update_rate = {self.multiplier} x lr '
                + (f'(at least 1/t for the first {self.warmup_iters} '
                   f'iterations in the {len(self._warm)} layers whose '
                   'estimates start at (0, 1)) ' if self.warmup_iters else
                   '') + f'for {len(self._layers)} estimate-mode BCN layers')
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
        step = runner.iter + 1  # t of the iteration about to run
        floor = 1.0 / step if step <= self.warmup_iters else 0.0
        for layer in self._layers:
            lr = lr_of.get(id(layer.batch_weight),
                           lr_of.get(id(layer.batch_bias), default))
            rate = self.multiplier * lr
            if id(layer) in self._warm:
                rate = max(floor, rate)
            layer.update_rate = rate


def at_initial_state(layer: BatchChannelNorm) -> bool:
    """Whether a layer's estimates are still the (0, 1) it was built with:
    never updated and not loaded from a checkpoint."""
    return bool(layer.num_batches_tracked.item() == 0
                and not layer.running_mean.any()
                and (layer.running_var == 1).all())


def _check_multiplier(multiplier) -> float:
    if isinstance(multiplier, bool) or not isinstance(multiplier,
                                                      numbers.Real):
        raise TypeError(
            f'BCNUpdateRateHook: multiplier={multiplier!r} must be a number '
            f'(r = multiplier x lr), got a {type(multiplier).__name__}')
    if not (math.isfinite(multiplier) and multiplier >= 0):
        raise ValueError(
            f'BCNUpdateRateHook: multiplier={multiplier!r} must be a finite '
            'number >= 0 (r = multiplier x lr; 0 freezes the estimates, 1 '
            'is the paper\'s rate)')
    return float(multiplier)


def _check_warmup_iters(warmup_iters) -> int:
    whole = (isinstance(warmup_iters, numbers.Integral)
             or (isinstance(warmup_iters, float)
                 and math.isfinite(warmup_iters)
                 and warmup_iters.is_integer()))
    if isinstance(warmup_iters, bool) or not whole:
        raise TypeError(
            f'BCNUpdateRateHook: warmup_iters={warmup_iters!r} must be a '
            'whole number of iterations (0: the paper\'s rate from the '
            'first iteration)')
    if warmup_iters < 0:
        raise ValueError(
            f'BCNUpdateRateHook: warmup_iters={warmup_iters!r} must be >= 0')
    return int(warmup_iters)


def check_buffer_broadcast(model, layers: List[BatchChannelNorm]) -> None:
    """Refuse ``sync_estimates=False`` under a DistributedDataParallel that
    broadcasts buffers: rank 0's estimates would overwrite every other
    rank's before each forward, silently undoing the per-process setting."""
    if not (isinstance(model, DistributedDataParallel)
            and model.broadcast_buffers):
        return
    unsynced = [layer for layer in layers if not layer.sync_estimates]
    if unsynced:
        raise ValueError(
            f'{len(unsynced)} BCN layers have sync_estimates=False (per-'
            'process estimates, the paper\'s COCO setting), but the model '
            'is wrapped with broadcast_buffers=True, which copies rank 0\'s '
            'estimates to every rank before each forward. Set '
            "model_wrapper_cfg=dict(type='MMDistributedDataParallel', "
            'broadcast_buffers=False) in the config, or sync_estimates=True '
            'in norm_cfg')


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
