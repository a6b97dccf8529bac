# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization layers: ``BCN`` and ``SyncBCN``.

Paper: Qiao et al., "Rethinking Normalization and Elimination Singularity in
Neural Networks", Sec. 3. The mathematics lives in :mod:`.bcn_functional`
(and, fused on CPU, in :mod:`.bcn_native`); this module owns the parameters, the batch step's statistics and their
updates (Eq. 13-14 in large-batch training, Algorithm 1 in micro-batch
training).
"""
import functools
from typing import Optional, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from . import bcn_native
from .bcn_distributed import (all_reduce_means, all_reduce_moments,
                              distributed_world)
from .bcn_functional import batch_moments, bcn_coefficients, moment_affine


@MODELS.register_module('BCN')
class BatchChannelNorm(nn.Module):
    r"""Batch-Channel Normalization (Eq. 16: ``BCN(X) = CN(BN(X))``).

    A per-channel batch step (Eq. 13) whose statistics come from the batch
    (``estimate=False``, large-batch training, as BatchNorm) or from
    estimates updated by Algorithm 1 (``estimate=True``, micro-batch
    training), followed by a per-sample normalization of each of
    ``num_groups`` groups of contiguous channels with a per-group affine
    (Eq. 15).

    Build it from any OpenMMLab config with
    ``norm_cfg=dict(type='BCN', num_groups=32)``.

    Args:
        num_features (int): Channels C of the (N, C, *) input.
        num_groups (int): Groups G of the group step; must divide C.
            Default 32.
        eps (float): Added to both steps' variances. Default 1e-5.
        momentum (float | None): Running-average factor of the batch
            statistics in large-batch training, as in BatchNorm (``None``:
            cumulative average). Default 0.1.
        estimate (bool): Use Algorithm 1 (micro-batch): normalize by
            estimates that start at mean 0 / variance 1 and move towards
            each batch's statistics by ``update_rate``. Default False.
        update_rate (float | None): Algorithm 1's rate r, normally the
            current learning rate, set every iteration by
            :class:`mmbcn.engine.BCNUpdateRateHook`. Only for
            ``estimate=True``. Default None (must be set before training).
        sync_estimates (bool): Under torch.distributed, average the batch
            statistics of Algorithm 1 across processes (weighted by element
            count) so that every process holds the same estimates. False
            reproduces the paper's unsynchronized setting. Default True.
        process_group: Process group for synchronization. Default: world.

    Parameters ``weight``/``bias`` (G) are the group step's affine
    :math:`\gamma^c`, :math:`\beta^c` (what ``constant_init`` and
    ``zero_init_residual`` set); ``batch_weight``/``batch_bias`` (C) the batch
    step's :math:`\gamma^b`, :math:`\beta^b`. Buffers ``running_mean``/
    ``running_var`` hold the batch step's statistics (running averages, or
    Algorithm 1's estimates); no gradient flows into them.

    BCN is not a ``_BatchNorm``: a backbone's ``norm_eval=True`` does not
    freeze it (freeze it with ``frozen_stages`` or ``requires_grad=False``
    plus ``.eval()`` if wanted).
    """

    _abbr_ = 'bcn'
    _sync_batch = False

    def __init__(self,
                 num_features: int,
                 num_groups: int = 32,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 estimate: bool = False,
                 update_rate: Optional[float] = None,
                 sync_estimates: bool = True,
                 process_group=None):
        super().__init__()
        if num_groups <= 0 or num_features % num_groups != 0:
            raise ValueError(
                f'{type(self).__name__}: num_groups={num_groups} must divide '
                f'num_features={num_features}')
        if update_rate is not None and not estimate:
            raise ValueError(
                f'{type(self).__name__}: update_rate={update_rate} is '
                'Algorithm 1\'s rate and applies only with estimate=True; '
                'large-batch mode uses momentum')
        self.num_features = num_features
        self.num_groups = num_groups
        self.eps = eps
        self.momentum = momentum
        self.estimate = estimate
        self.sync_estimates = sync_estimates
        self.process_group = process_group
        self.update_rate = update_rate
        self.weight = nn.Parameter(torch.ones(num_groups))
        self.bias = nn.Parameter(torch.zeros(num_groups))
        self.batch_weight = nn.Parameter(torch.ones(num_features))
        self.batch_bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self.register_buffer('num_batches_tracked',
                             torch.tensor(0, dtype=torch.long))

    @property
    def update_rate(self) -> Optional[float]:
        """Algorithm 1's rate r (estimate mode); settable."""
        return self._update_rate

    @update_rate.setter
    def update_rate(self, rate: Optional[float]) -> None:
        if rate is not None:
            rate = float(rate)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f'{type(self).__name__}: update_rate={rate} '
                                 'must lie in [0, 1]')
        self._update_rate = rate

    def reset_running_stats(self) -> None:
        """Statistics back to mean 0, variance 1 (Algorithm 1's start)."""
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f'{type(self).__name__}: expected input of shape (N, '
                f'{self.num_features}, *), got {tuple(x.shape)}')
        if x.dim() == 2:
            return self.forward(x.unsqueeze(-1)).squeeze(-1)
        if self.training:
            self._check_training_input(x)
        if bcn_native.applies(x, self):
            return bcn_native.bcn(x, self)
        per_sample = x[0, 0].numel() if x.shape[0] else 0
        fn = functools.partial(self._coefficients, per_sample=per_sample)
        params = (self.batch_weight, self.batch_bias, self.weight, self.bias)
        with torch.autocast(x.device.type, enabled=False):
            return moment_affine(x, fn, params)

    def _check_training_input(self, x: Tensor) -> None:
        if self.estimate:
            if self.update_rate is None:
                raise RuntimeError(
                    f'{type(self).__name__}(estimate=True) is training but '
                    'its update_rate was never set: add '
                    "dict(type='BCNUpdateRateHook') to custom_hooks (r "
                    'follows the learning rate, Sec. 3.2) or set '
                    'layer.update_rate')
        # One value per channel: N * H * W == 1.
        elif x.numel() == self.num_features and not self._synchronized:
            raise ValueError(
                f'{type(self).__name__}: expected more than 1 value per '
                f'channel when training in large-batch mode, got input of '
                f'shape {tuple(x.shape)}; use estimate=True for micro-batch '
                'training')

    @property
    def _synchronized(self) -> bool:
        sync = self.sync_estimates if self.estimate else self._sync_batch
        return sync and distributed_world(self.process_group) > 1

    def _coefficients(self, mean: Tensor, var: Tensor, batch_weight: Tensor,
                      batch_bias: Tensor, weight: Tensor, bias: Tensor,
                      per_sample: int) -> Tuple[Tensor, Tensor]:
        if not self.training:
            batch_mean, batch_var = self.running_mean, self.running_var
        elif self.estimate:
            batch_mean, batch_var = self._update_estimates(
                mean.detach(), var.detach(), per_sample)
        else:
            batch_mean, batch_var = self._batch_statistics(
                mean, var, per_sample)
        return bcn_coefficients(mean, var, batch_mean.to(mean.dtype),
                                batch_var.to(mean.dtype), batch_weight,
                                batch_bias, weight, bias, self.num_groups,
                                self.eps)

    @torch.no_grad()
    def _update_estimates(self, mean: Tensor, var: Tensor,
                          per_sample: int) -> Tuple[Tensor, Tensor]:
        """Algorithm 1, lines 1-4; returns the updated estimates (line 5
        normalizes with them)."""
        old_mean = self.running_mean.to(mean.dtype)
        if mean.shape[0]:
            # Line 1: mu_dot_c = mean of x over (b, h, w).
            batch_mean = mean.mean(0)
            # Line 2: sigma_dot_c^2 = mean of (x - mu_hat_c)^2 about the
            # *old* estimate: E[(x - m)^2] = var + (mean - m)^2 per sample.
            batch_sq = (var + (mean - old_mean).pow(2)).mean(0)
        else:
            batch_mean = batch_sq = torch.zeros_like(old_mean)
        count = mean.new_tensor(float(mean.shape[0] * per_sample))
        if self._synchronized:
            count, batch_mean, batch_sq = all_reduce_means(
                count, batch_mean, batch_sq, group=self.process_group)
        # Lines 3-4: move both estimates by r; no update from an empty batch.
        rate = self.update_rate * (count > 0).to(mean.dtype)
        self.running_mean.add_(rate * (batch_mean - old_mean))
        self.running_var.add_(rate * (batch_sq - self.running_var))
        return self.running_mean.clone(), self.running_var.clone()

    def _batch_statistics(self, mean: Tensor, var: Tensor,
                          per_sample: int) -> Tuple[Tensor, Tensor]:
        """Eq. 13-14 with batch statistics (differentiable), and the
        BatchNorm-style running averages used at test time."""
        n = mean.shape[0]
        if self._sync_batch and distributed_world(self.process_group) > 1:
            local_mean, local_var = batch_moments(mean, var) if n else (
                mean.sum(0), var.sum(0))
            count, batch_mean, batch_var = all_reduce_moments(
                mean.new_tensor(float(n * per_sample)), local_mean,
                local_var, group=self.process_group)
        elif n:
            batch_mean, batch_var = batch_moments(mean, var)
            count = mean.new_tensor(float(n * per_sample))
        else:
            return self.running_mean, self.running_var
        self._update_running_averages(count, batch_mean.detach(),
                                      batch_var.detach())
        return batch_mean, batch_var

    @torch.no_grad()
    def _update_running_averages(self, count: Tensor, batch_mean: Tensor,
                                 batch_var: Tensor) -> None:
        valid = count > 0
        self.num_batches_tracked.add_(valid.long())
        if self.momentum is None:
            factor = 1.0 / self.num_batches_tracked.clamp(min=1).to(
                batch_mean.dtype)
        else:
            factor = torch.full_like(count, self.momentum)
        factor = factor * valid.to(batch_mean.dtype)
        unbiased = batch_var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(batch_mean.to(self.running_mean), factor)
        self.running_var.lerp_(unbiased.to(self.running_var), factor)

    def extra_repr(self) -> str:
        mode = (f'estimate=True, update_rate={self.update_rate}'
                if self.estimate else f'momentum={self.momentum}')
        return (f'{self.num_features}, num_groups={self.num_groups}, '
                f'eps={self.eps}, {mode}')


@MODELS.register_module('SyncBCN')
class SyncBatchChannelNorm(BatchChannelNorm):
    """BCN whose batch step takes its statistics over all processes, as
    SyncBatchNorm does (large-batch training across GPUs). On one process
    it equals :class:`BatchChannelNorm`. With ``estimate=True`` the
    estimates are always synchronized."""

    _sync_batch = True

    def __init__(self, *args, **kwargs):
        if kwargs.get('sync_estimates') is False:
            raise ValueError('SyncBCN synchronizes its statistics; use '
                             "type='BCN' with sync_estimates=False for "
                             'unsynchronized estimates')
        super().__init__(*args, **kwargs)
