# Copyright (c) mmbcn contributors. All rights reserved.
"""Log how close a model is to elimination singularities while it trains
(paper Sec. 2: StatDiff, Eq. 8 and Fig. 3; dead and under-represented
channels, Eq. 4 and Fig. 2).

The measurements live in :mod:`mmbcn.analysis`, imported when training
starts, so that registering the hook (``import mmbcn``) does not load the
analysis experiments."""
from typing import TYPE_CHECKING, Dict, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

if TYPE_CHECKING:
    from ..analysis.norm_probe import SingularityProbe


@HOOKS.register_module()
class SingularityHook(Hook):
    """Every ``interval`` epochs (``by_epoch=True``) or iterations, log over
    all BCN, GN, LN and BN layers of the model:

    * ``singularity/stat_diff_mean``, ``singularity/stat_diff_std``: mean and
      standard deviation of StatDiff (Eq. 8) over all groups of all layers;
    * ``singularity/dead_fraction``: fraction of channels whose outputs,
      after ReLU, are all 0 over the batch;
    * ``singularity/small_scale_fraction``: fraction of channels whose
      activation scale after ReLU is below ``scale_ratio`` of their group's
      largest.

    The channel fractions come from the last training batch of the interval
    (the last iteration of the epoch with ``by_epoch=True``). Values go to
    the runner's logger and to every visualization backend
    (``LocalVisBackend``, ``TensorboardVisBackend``, ...) at step = epoch or
    iteration. See :mod:`mmbcn.analysis.norm_probe` for the statistics of
    each layer type (GN and LN statistics are tracked by forward hooks).

    Add it with ``custom_hooks=[dict(type='SingularityHook', interval=1)]``.

    Args:
        interval (int): Log every ``interval`` epochs or iterations.
            Default 1.
        by_epoch (bool): Count ``interval`` in epochs (True) or training
            iterations (False). Default True.
        momentum (float): Running-average factor of the statistics tracked
            for layers that keep none (GN, LN). Default 0.1.
        scale_ratio (float): Threshold of the small-scale measure.
            Default 0.01.
    """

    priority = 'NORMAL'

    def __init__(self,
                 interval: int = 1,
                 by_epoch: bool = True,
                 momentum: float = 0.1,
                 scale_ratio: float = 0.01):
        if not isinstance(interval, int) or interval <= 0:
            raise ValueError(
                f'SingularityHook: interval={interval!r} must be a positive '
                'integer')
        if not 0 < momentum <= 1:
            raise ValueError(
                f'SingularityHook: momentum={momentum} must lie in (0, 1]')
        if not 0 < scale_ratio < 1:
            raise ValueError(
                f'SingularityHook: scale_ratio={scale_ratio} must lie in '
                '(0, 1)')
        self.interval = interval
        self.by_epoch = by_epoch
        self.momentum = momentum
        self.scale_ratio = scale_ratio
        self.probe: Optional['SingularityProbe'] = None

    def before_train(self, runner) -> None:
        from ..analysis.norm_probe import SingularityProbe, find_norm_layers
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        layers = find_norm_layers(model)
        if not layers:
            runner.logger.warning(
                'SingularityHook: the model has no BCN, GN, LN or BN layer; '
                'the hook does nothing')
            return
        self.probe = SingularityProbe(model, self.momentum, self.scale_ratio)
        runner.logger.info(
            f'SingularityHook: watching {len(layers)} normalization layers')

    def _last_iter_of_interval(self, runner, batch_idx: int) -> bool:
        if self.by_epoch:
            return (self.every_n_epochs(runner, self.interval)
                    and self.end_of_epoch(runner.train_dataloader, batch_idx))
        return self.every_n_train_iters(runner, self.interval)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self.probe is not None and self._last_iter_of_interval(
                runner, batch_idx):
            self.probe.start_capture()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if self.probe is None or not self._last_iter_of_interval(
                runner, batch_idx):
            return
        self.probe.stop_capture()
        if not self.by_epoch:
            self._log(runner, self.probe.summary(), runner.iter + 1, 'Iter')

    def after_train_epoch(self, runner) -> None:
        if (self.probe is not None and self.by_epoch
                and self.every_n_epochs(runner, self.interval)):
            self._log(runner, self.probe.summary(), runner.epoch + 1, 'Epoch')

    def after_train(self, runner) -> None:
        if self.probe is not None:
            self.probe.remove()
            self.probe = None

    @staticmethod
    def _log(runner, summary: Dict[str, float], step: int,
             unit: str) -> None:
        if not summary:
            return
        scalars = {f'singularity/{k}': v for k, v in summary.items()}
        runner.visualizer.add_scalars(scalars, step=step)
        text = '  '.join(f'{k}: {v:.4f}' for k, v in summary.items())
        runner.logger.info(f'SingularityHook {unit} {step}: {text}')
