# Copyright (c) mmbcn contributors. All rights reserved.
"""The ``python`` backend: BCN from per-(sample, channel) moments
(:mod:`.moment_affine`) with the batch step's statistics chosen by mode.

Serves every device, dtype and layout, and synchronized statistics
(torch.distributed): it is the reference the other backends are tested
against. Equation numbers refer to Qiao et al. (Sec. 3).
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from .call import ESTIMATE, FIXED, BCNCall
from .distributed import all_reduce_means, all_reduce_moments
from .moment_affine import batch_moments, bcn_coefficients, moment_affine


def forward(call: BCNCall) -> Tensor:
    x = call.x
    per_sample = x[0, 0].numel() if x.shape[0] else 0
    fn = functools.partial(_coefficients, call=call, per_sample=per_sample)
    params = (call.batch_weight, call.batch_bias, call.weight, call.bias)
    # Statistics in float32 (or float64) whatever autocast would choose.
    with torch.autocast(x.device.type, enabled=False):
        return moment_affine(x, fn, params)


def _coefficients(mean: Tensor, var: Tensor, batch_weight: Tensor,
                  batch_bias: Tensor, weight: Tensor, bias: Tensor,
                  call: BCNCall, per_sample: int) -> Tuple[Tensor, Tensor]:
    if call.mode == FIXED:
        batch_mean, batch_var = call.running_mean, call.running_var
    elif call.mode == ESTIMATE:
        batch_mean, batch_var = _update_estimates(call, mean.detach(),
                                                  var.detach(), per_sample)
    else:
        batch_mean, batch_var = _batch_statistics(call, mean, var,
                                                  per_sample)
    return bcn_coefficients(mean, var, batch_mean.to(mean.dtype),
                            batch_var.to(mean.dtype), batch_weight,
                            batch_bias, weight, bias, call.num_groups,
                            call.eps)


@torch.no_grad()
def _update_estimates(call: BCNCall, mean: Tensor, var: Tensor,
                      per_sample: int) -> Tuple[Tensor, Tensor]:
    """Algorithm 1, lines 1-4; returns the updated estimates (line 5
    normalizes with them)."""
    old_mean = call.running_mean.to(mean.dtype)
    if mean.shape[0]:
        # Line 1: mu_dot_c = mean of x over (b, h, w).
        batch_mean = mean.mean(0)
        # Line 2: sigma_dot_c^2 = mean of (x - mu_hat_c)^2 about the *old*
        # estimate: E[(x - m)^2] = var + (mean - m)^2 per sample.
        batch_sq = (var + (mean - old_mean).pow(2)).mean(0)
    else:
        batch_mean = batch_sq = torch.zeros_like(old_mean)
    count = mean.new_tensor(float(mean.shape[0] * per_sample))
    if call.synchronized:
        count, batch_mean, batch_sq = all_reduce_means(
            count, batch_mean, batch_sq, group=call.process_group)
    # Lines 3-4: move both estimates by r; no update from an empty batch.
    rate = call.rate * (count > 0).to(mean.dtype)
    call.running_mean.add_(rate * (batch_mean - old_mean))
    call.running_var.add_(rate * (batch_sq - call.running_var))
    return call.running_mean.clone(), call.running_var.clone()


def _batch_statistics(call: BCNCall, mean: Tensor, var: Tensor,
                      per_sample: int) -> Tuple[Tensor, Tensor]:
    """Eq. 13-14 with batch statistics (differentiable), and the
    BatchNorm-style running averages used at test time."""
    n = mean.shape[0]
    if call.synchronized:
        local_mean, local_var = batch_moments(mean, var) if n else (
            mean.sum(0), var.sum(0))
        count, batch_mean, batch_var = all_reduce_moments(
            mean.new_tensor(float(n * per_sample)), local_mean, local_var,
            group=call.process_group)
    elif n:
        batch_mean, batch_var = batch_moments(mean, var)
        count = mean.new_tensor(float(n * per_sample))
    else:
        return call.running_mean, call.running_var
    _update_running_averages(call, count, batch_mean.detach(),
                             batch_var.detach())
    return batch_mean, batch_var


@torch.no_grad()
def _update_running_averages(call: BCNCall, count: Tensor,
                             batch_mean: Tensor, batch_var: Tensor) -> None:
    valid = count > 0
    call.num_batches_tracked.add_(valid.long())
    # the weight of this batch in the update (0 for an empty batch)
    update_rate: Optional[Tensor]
    if call.rate is None:  # cumulative average, as BatchNorm momentum=None
        update_rate = 1.0 / call.num_batches_tracked.clamp(min=1).to(
            batch_mean.dtype)
    else:
        update_rate = torch.full_like(count, call.rate)
    update_rate = update_rate * valid.to(batch_mean.dtype)
    unbiased = batch_var * count / (count - 1).clamp(min=1)
    call.running_mean.lerp_(batch_mean.to(call.running_mean), update_rate)
    call.running_var.lerp_(unbiased.to(call.running_var), update_rate)
