# Copyright (c) mmbcn contributors. All rights reserved.
"""``batch_channel_norm``: Batch-Channel Normalization as one op, shaped
like ``torch.nn.functional.batch_norm``.

Paper: Qiao et al., "Rethinking Normalization and Elimination Singularity
in Neural Networks", Sec. 3: ``BCN(X) = CN(BN(X))`` (Eq. 16), a per-channel
batch step (Eq. 13) followed by a per-sample group step with a per-group
affine (Eq. 15).
"""
from typing import Union

import torch
from torch import Tensor

from . import backends
from .call import BATCH, ESTIMATE, MODES, BCNCall
from .distributed import distributed_world


def batch_channel_norm(x: Tensor,
                       running_mean: Tensor,
                       running_var: Tensor,
                       num_batches_tracked: Tensor,
                       batch_weight: Tensor,
                       batch_bias: Tensor,
                       weight: Tensor,
                       bias: Tensor,
                       num_groups: int,
                       mode: str = BATCH,
                       rate: Union[float, Tensor, None] = None,
                       eps: float = 1e-5,
                       sync: bool = False,
                       process_group=None) -> Tensor:
    r"""BCN of ``x`` (N, C, \*), updating the statistics buffers in place.

    Args:
        x: input (N, C, \*).
        running_mean, running_var: (C,) the batch step's statistics:
            BatchNorm-style running averages, or Algorithm 1's estimates.
        num_batches_tracked: () int64, counts ``'batch'`` mode updates.
        batch_weight, batch_bias: (C,) :math:`\gamma^b`, :math:`\beta^b`.
        weight, bias: (G,) the group step's :math:`\gamma^c`,
            :math:`\beta^c`.
        num_groups: G; divides C.
        mode: ``'fixed'``: normalize with the buffers as they are
            (evaluation); ``'batch'``: with the batch's statistics
            (differentiable, Eq. 13), moving the running averages by
            ``rate`` (the momentum; ``None``: cumulative average);
            ``'estimate'``: Algorithm 1: move the estimates by ``rate``
            towards the batch (lines 1-4; the variance is taken about the
            old mean), then normalize with the updated estimates (line 5);
            no gradient flows into them.
        rate: momentum (``'batch'``) or Algorithm 1's r (``'estimate'``):
            a number, or a one-element tensor (what the layers pass, so
            that a rate changing every iteration is an input of a
            compiled graph rather than a constant it is recompiled for).
        eps: added to both steps' variances.
        sync: combine the batch statistics across the processes of
            ``process_group`` (the world by default) under
            torch.distributed, weighted by element count.

    The computation runs on the backend chosen by
    :mod:`mmbcn.ops.backends` (``MMBCN_BACKEND``).
    """
    if not x.is_floating_point():
        raise TypeError(
            f'batch_channel_norm: the input is {x.dtype}; BCN normalizes '
            'floating-point tensors (float16, bfloat16, float32, float64): '
            'convert it first, e.g. x.float()')
    if mode not in MODES:
        raise ValueError(f'batch_channel_norm: mode={mode!r} is not one of '
                         f'{MODES}')
    if mode == ESTIMATE and rate is None:
        raise ValueError("batch_channel_norm: mode='estimate' needs "
                         "Algorithm 1's rate (rate=...)")
    if rate is not None and not isinstance(rate, Tensor):
        rate = torch.tensor(float(rate), dtype=torch.float64)
    if x.dim() == 2:
        return batch_channel_norm(x.unsqueeze(-1), running_mean, running_var,
                                  num_batches_tracked, batch_weight,
                                  batch_bias, weight, bias, num_groups, mode,
                                  rate, eps, sync,
                                  process_group).squeeze(-1)
    synchronized = (sync and mode in (BATCH, ESTIMATE)
                    and distributed_world(process_group) > 1)
    call = BCNCall(x, running_mean, running_var, num_batches_tracked,
                   batch_weight, batch_bias, weight, bias, num_groups, mode,
                   rate, eps, synchronized, process_group)
    if x.numel() == 0:
        # Nothing to compute; a synchronized layer still joins the
        # collectives, through the reference.
        if not synchronized:
            return _empty(call)
        return backends.BACKENDS['python'].forward(call)
    return backends.select(call).forward(call)


def _empty(call: BCNCall) -> Tensor:
    """An empty batch (a mask head without positive RoIs): an empty output
    connected to the parameters (zero gradients), statistics untouched."""
    x = call.x
    zero = sum(p.sum() for p in (call.batch_weight, call.batch_bias,
                                 call.weight, call.bias)) * 0
    return x * zero.to(x.dtype) if torch.is_grad_enabled() else x.clone()
