# Copyright (c) mmbcn contributors. All rights reserved.
"""Batch-Channel Normalization layers (registered as ``BCN`` and
``SyncBCN`` by :mod:`mmbcn.cnn`).

Paper: Qiao et al., "Rethinking Normalization and Elimination Singularity in
Neural Networks", Sec. 3. The layers own the parameters, the statistics
buffers and their validation; the computation is the op
:func:`mmbcn.ops.batch_channel_norm` (Eq. 13-16, Algorithm 1), which runs on
the backend that serves the input (native CPU kernel, Triton, or the Python
reference) and updates the buffers itself. They need torch alone.
"""
import itertools
import math
import numbers
from typing import Optional

import torch
from torch import Tensor, nn

from .batch_channel_norm import batch_channel_norm
from .call import BATCH, ESTIMATE, FIXED
from .distributed import check_same_layer, distributed_world

_layer_ids = itertools.count()


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
        name = type(self).__name__
        for key, value in (('num_features', num_features),
                           ('num_groups', num_groups)):
            if not isinstance(value, numbers.Integral) or isinstance(
                    value, bool):
                raise TypeError(f'{name}: {key}={value!r} must be a whole '
                                'number')
        for key, value in (('estimate', estimate), ('sync_estimates',
                                                    sync_estimates)):
            if not isinstance(value, bool):
                raise TypeError(
                    f'{name}: {key}={value!r} must be True or False (a '
                    'string such as \'False\' would count as true)')
        if num_groups <= 0 or num_features % num_groups != 0:
            raise ValueError(
                f'{name}: num_groups={num_groups} must divide '
                f'num_features={num_features}')
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps)
                and eps > 0):
            raise ValueError(f'{name}: eps={eps!r} must be a positive '
                             'finite number (it keeps 1 / sqrt(var + eps) '
                             'finite and the output normalized)')
        if update_rate is not None and not estimate:
            raise ValueError(
                f'{name}: update_rate={update_rate} is '
                'Algorithm 1\'s rate and applies only with estimate=True; '
                'large-batch mode uses momentum')
        self.num_features = num_features
        self.num_groups = num_groups
        self.eps = float(eps)
        # The rates as one-element tensors as well (plain attributes, on
        # the CPU, not in the state dict): torch.compile takes a tensor
        # attribute as a graph input, so a rate that changes every
        # iteration does not recompile the graph.
        self._momentum_tensor = torch.zeros((), dtype=torch.float64)
        self._update_rate_tensor = torch.zeros((), dtype=torch.float64)
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
        # Construction order, the same on every process that builds the
        # same model: checked across ranks at the first synchronization.
        self._layer_id = next(_layer_ids)
        self._layer_checked = False

    @property
    def update_rate(self) -> Optional[float]:
        """Algorithm 1's rate r (estimate mode); settable."""
        return self._update_rate

    @update_rate.setter
    def update_rate(self, rate: Optional[float]) -> None:
        self._update_rate = self._check_rate('update_rate', rate)
        # What forward reads (a value compiled graphs would guard on):
        # whether a rate is set; the rate itself is the tensor.
        self._rate_set = rate is not None
        if rate is not None:
            self._update_rate_tensor.fill_(self._update_rate)

    @property
    def momentum(self) -> Optional[float]:
        """Running-average factor of the batch statistics; settable."""
        return self._momentum

    @momentum.setter
    def momentum(self, momentum: Optional[float]) -> None:
        self._momentum = self._check_rate(
            'momentum', momentum, ' (or be None for the cumulative average)')
        if momentum is not None:
            self._momentum_tensor.fill_(self._momentum)

    def _check_rate(self, key: str, rate, alternative: str = ''):
        if rate is None:
            return None
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or \
                not 0.0 <= rate <= 1.0:
            raise ValueError(f'{type(self).__name__}: {key}={rate!r} must '
                             f'lie in [0, 1]{alternative}')
        return float(rate)

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f'{type(self).__name__} cannot be compiled by torch.jit.script '
            '(its forward chooses a backend in Python). Use torch.jit.trace '
            'or torch.export, which record BCN as one operator, or fold '
            'BCN into the convolutions first for deployment '
            '(mmbcn.deploy.fold_bcn, tools/deploy/fold_bcn.py)')

    def reset_running_stats(self) -> None:
        """Statistics back to mean 0, variance 1 (Algorithm 1's start)."""
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    @property
    def mode(self) -> str:
        """The batch step's statistics in the next forward: ``'fixed'``
        (evaluation), ``'batch'`` (large-batch training) or ``'estimate'``
        (Algorithm 1)."""
        if not self.training:
            return FIXED
        return ESTIMATE if self.estimate else BATCH

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f'{type(self).__name__}: expected input of shape (N, '
                f'{self.num_features}, *), got {tuple(x.shape)}')
        mode = self.mode
        if self.estimate:
            rate = self._update_rate_tensor
        else:
            rate = None if self._momentum is None else self._momentum_tensor
        # The module's dicts rather than attribute access: this runs on
        # every call, and on small maps the Python around the kernel counts.
        params, buffers = self._parameters, self._buffers
        buffers = (buffers['running_mean'], buffers['running_var'],
                   buffers['num_batches_tracked'])
        if mode != FIXED:
            self._check_training_input(x)
            if _recomputing():
                # Gradient checkpointing runs this forward again inside
                # the backward pass. The statistics must not move twice,
                # and the output must equal the first one: Algorithm 1's
                # line 5 normalized with the estimates as they are now (a
                # constant), and the batch mode's statistics come from the
                # same batch again.
                if mode == ESTIMATE:
                    mode = FIXED
                else:
                    rate = torch.zeros((), dtype=torch.float64)
                    buffers = tuple(b.clone() for b in buffers)
            elif self._synchronized and not self._layer_checked:
                check_same_layer(self._layer_id, self.num_features,
                                 self.process_group)
                self._layer_checked = True
        return batch_channel_norm(x, *buffers, params['batch_weight'],
                                  params['batch_bias'], params['weight'],
                                  params['bias'], self.num_groups, mode,
                                  rate, self.eps, self._synchronized,
                                  self.process_group)

    def _check_training_input(self, x: Tensor) -> None:
        if self.estimate:
            if not self._rate_set:
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
        """Whether this layer's statistics are combined over processes:
        Algorithm 1's estimates (``sync_estimates``) or SyncBCN's batch
        statistics, under torch.distributed with more than one process."""
        wanted = self.sync_estimates if self.estimate else self._sync_batch
        return wanted and distributed_world(self.process_group) > 1

    def extra_repr(self) -> str:
        mode = (f'estimate=True, update_rate={self.update_rate}'
                if self.estimate else f'momentum={self.momentum}')
        return (f'{self.num_features}, num_groups={self.num_groups}, '
                f'eps={self.eps}, {mode}')


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


def _recomputing() -> bool:
    """Whether this forward runs inside a backward pass: the recomputation
    of gradient checkpointing (``torch.utils.checkpoint``, reentrant or
    not; mmdet/mmseg ``with_cp=True``)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1
