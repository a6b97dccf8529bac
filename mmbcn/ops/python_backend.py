# Copyright (c) mmbcn contributors. All rights reserved.
"""The ``python`` backend: BCN from per-(sample, channel) moments
(:mod:`.moment_affine`) with the batch step's statistics chosen by mode.

Serves every device, dtype and layout, and synchronized statistics
(torch.distributed): it is the reference the other backends are tested
against. Equation numbers refer to Qiao et al. (Sec. 3).

The computation is one PyTorch operator, ``torch.ops.mmbcn.bcn_reference``
(``torch.library.custom_op``), with a shape function for fake tensors and
its own autograd formula. ``torch.compile``, ``torch.export`` and
``torch.jit.trace`` therefore record BCN as one node whose forward and
backward are this module's, never a lowering of its internal operations
(inductor has had wrong-output bugs on BatchNorm -> GroupNorm chains).
The backward pass is written with differentiable operations, so a
gradient of the gradient (``create_graph=True``, gradient penalties) is
exact. While a model is exported to ONNX, where the operator has no
equivalent, the same mathematics runs as plain PyTorch operations.
"""
import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .backends import Backend
from .call import BATCH, ESTIMATE, FIXED, BCNCall
from .distributed import all_reduce_means, all_reduce_moments
from .moment_affine import (apply_affine, batch_moments, bcn_coefficients,
                            channel_moments, coefficients_vjp, row_sums,
                            stats_dtype)

Outputs = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                Tensor, Tensor]


def forward(call: BCNCall) -> Tensor:
    args = (call.x, call.running_mean, call.running_var,
            call.num_batches_tracked, call.batch_weight, call.batch_bias,
            call.weight, call.bias, call.num_groups, call.mode, call.rate,
            call.eps, _group_name(call))
    if torch.onnx.is_in_onnx_export():
        # The exporters record operations: give them ONNX-able ones.
        if call.mode == FIXED:
            return _exportable(call)
        return _compute(*args)[0]
    y, *_, new_mean, new_var, new_tracked = \
        torch.ops.mmbcn.bcn_reference(*args)
    if call.mode != FIXED:
        # The operator is functional (what torch.library's autograd needs):
        # it returns the new statistics, written into the buffers here.
        with torch.no_grad():
            call.running_mean.copy_(new_mean)
            call.running_var.copy_(new_var)
            call.num_batches_tracked.copy_(new_tracked)
    return y


def _exportable(call: BCNCall) -> Tensor:
    """Evaluation-mode BCN in the operations ONNX has its own nodes for:
    Eq. 13 as ``BatchNormalization`` with the running statistics, Eq. 15
    as PyTorch's group normalization with the per-group affine repeated
    over each group's channels."""
    k = call.x.shape[1] // call.num_groups
    x_dot = F.batch_norm(call.x, call.running_mean, call.running_var,
                         call.batch_weight, call.batch_bias, False, 0.0,
                         call.eps)
    return F.group_norm(x_dot, call.num_groups,
                        call.weight.repeat_interleave(k),
                        call.bias.repeat_interleave(k), call.eps)


def _group_name(call: BCNCall) -> Optional[str]:
    """The process group as the operator's schema can carry it: by name
    (``None``: not synchronized)."""
    if not call.synchronized:
        return None
    return (call.process_group or dist.group.WORLD).group_name


def _resolve(group_name: str):
    from torch.distributed.distributed_c10d import _resolve_process_group
    return _resolve_process_group(group_name)


@torch.library.custom_op('mmbcn::bcn_reference', mutates_args=())
def bcn_reference(x: Tensor, running_mean: Tensor, running_var: Tensor,
                  num_batches_tracked: Tensor, batch_weight: Tensor,
                  batch_bias: Tensor, weight: Tensor, bias: Tensor,
                  num_groups: int, stats_mode: str, rate: Optional[Tensor],
                  eps: float, group_name: Optional[str]) -> Outputs:
    """BCN of ``x``, what its backward pass needs and the new statistics:
    ``(y, mean, var, batch_mean, batch_var, count, new_running_mean,
    new_running_var, new_num_batches_tracked)``: the per-(n, c) moments of
    ``x``, the batch step's statistics it normalized with, the number of
    elements per channel they were taken over (all processes), and the
    buffers as ``stats_mode`` (``'fixed'``, ``'batch'``, ``'estimate'``)
    moves them at ``rate`` (the momentum in ``'batch'`` mode, Algorithm 1's
    r in ``'estimate'`` mode). The inputs are not modified."""
    return _compute(x, running_mean, running_var, num_batches_tracked,
                    batch_weight, batch_bias, weight, bias, num_groups,
                    stats_mode, rate, eps, group_name)


@bcn_reference.register_fake
def _(x, running_mean, running_var, num_batches_tracked, batch_weight,
      batch_bias, weight, bias, num_groups, stats_mode, rate, eps,
      group_name):
    n, c = x.shape[:2]
    dtype = stats_dtype(x.dtype)
    per_nc = x.new_empty((n, c), dtype=dtype)
    per_c = x.new_empty((c, ), dtype=dtype)
    return (torch.empty_like(x), per_nc, per_nc.clone(), per_c,
            per_c.clone(), x.new_empty((), dtype=dtype),
            torch.empty_like(running_mean), torch.empty_like(running_var),
            torch.empty_like(num_batches_tracked))


def _compute(x, running_mean, running_var, num_batches_tracked,
             batch_weight, batch_bias, weight, bias, num_groups, stats_mode,
             rate, eps, group_name) -> Outputs:
    running_mean, running_var = running_mean.clone(), running_var.clone()
    num_batches_tracked = num_batches_tracked.clone()
    # Statistics in float32 (or float64) whatever autocast would choose.
    with torch.autocast(x.device.type, enabled=False):
        mean, var = channel_moments(x)
        length = x[0, 0].numel() if x.shape[0] else 0
        count = mean.new_tensor(float(x.shape[0] * length))
        group = None if group_name is None else _resolve(group_name)
        if stats_mode == FIXED:
            batch_mean = running_mean.to(mean.dtype, copy=True)
            batch_var = running_var.to(mean.dtype, copy=True)
        elif stats_mode == ESTIMATE:
            count, batch_mean, batch_var = _update_estimates(
                running_mean, running_var, mean, var, count,
                update_rate=rate, group=group)
        else:
            count, batch_mean, batch_var = _batch_statistics(
                running_mean, running_var, num_batches_tracked, mean, var,
                count, momentum=rate, group=group)
        coef_a, coef_b = bcn_coefficients(mean, var, batch_mean, batch_var,
                                          batch_weight, batch_bias, weight,
                                          bias, num_groups, eps)
        y = apply_affine(x, coef_a, coef_b)
    return (y, mean, var, batch_mean, batch_var, count, running_mean,
            running_var, num_batches_tracked)


def _update_estimates(running_mean, running_var, mean, var, count,
                      update_rate, group):
    """Algorithm 1, lines 1-4; returns the updated estimates (line 5
    normalizes with them)."""
    old_mean = running_mean.to(mean.dtype)
    if mean.shape[0]:
        # Line 1: mu_dot_c = mean of x over (b, h, w).
        batch_mean = mean.mean(0)
        # Line 2: sigma_dot_c^2 = mean of (x - mu_hat_c)^2 about the *old*
        # estimate: E[(x - m)^2] = var + (mean - m)^2 per sample.
        batch_sq = (var + (mean - old_mean).pow(2)).mean(0)
    else:
        batch_mean = batch_sq = torch.zeros_like(old_mean)
    if group is not None:
        count, batch_mean, batch_sq = all_reduce_means(count, batch_mean,
                                                       batch_sq, group=group)
    # Lines 3-4: move both estimates by r; no update from an empty batch.
    step = update_rate.to(mean) * (count > 0).to(mean.dtype)
    running_mean.add_((step * (batch_mean - old_mean)).to(running_mean))
    running_var.add_((step * (batch_sq - running_var)).to(running_var))
    return (count, running_mean.to(mean.dtype, copy=True),
            running_var.to(mean.dtype, copy=True))


def _batch_statistics(running_mean, running_var, num_batches_tracked, mean,
                      var, count, momentum, group):
    """Eq. 13-14 with batch statistics, and the BatchNorm-style running
    averages used at test time."""
    if group is not None:
        local_mean, local_var = batch_moments(mean, var) if mean.shape[0] \
            else (mean.sum(0), var.sum(0))
        count, batch_mean, batch_var = all_reduce_moments(
            count, local_mean, local_var, group=group)
    elif mean.shape[0]:
        batch_mean, batch_var = batch_moments(mean, var)
    else:
        return (count, running_mean.to(mean.dtype, copy=True),
                running_var.to(mean.dtype, copy=True))
    valid = count > 0
    num_batches_tracked.add_(valid.long())
    if momentum is None:  # cumulative average, as BatchNorm's
        weight = 1.0 / num_batches_tracked.clamp(min=1).to(mean.dtype)
    else:
        weight = momentum.to(mean)
    weight = weight * valid.to(mean.dtype)
    unbiased = batch_var * count / (count - 1).clamp(min=1)
    running_mean.lerp_(batch_mean.to(running_mean), weight.to(running_mean))
    running_var.lerp_(unbiased.to(running_var), weight.to(running_var))
    return count, batch_mean, batch_var


def _setup_context(ctx, inputs, output):
    (x, _, _, _, batch_weight, batch_bias, weight, bias, num_groups,
     stats_mode, _, eps, group_name) = inputs
    _, mean, var, batch_mean, batch_var, count = output[:6]
    ctx.save_for_backward(x, batch_weight, batch_bias, weight, bias, mean,
                          var, batch_mean, batch_var, count)
    ctx.num_groups, ctx.stats_mode = num_groups, stats_mode
    ctx.eps, ctx.group_name = eps, group_name


def _backward(ctx, dy, d_mean, d_var, d_batch_mean, d_batch_var, *_):
    r"""Gradients of :func:`bcn_reference` by hand, in differentiable
    operations. With ``y = A * x + B`` (:func:`bcn_coefficients`), the
    per-(n, c) sums ``dA = sum dy * x`` and ``dB = sum dy`` go through the
    coefficients' vector-Jacobian product (:func:`coefficients_vjp`) to the
    moments, and over the L elements of each (n, c):

        dx = A * dy + dmean / L + 2 * dvar * (x - mean) / L

    In ``'batch'`` mode the batch statistics are functions of the moments
    (over all processes when synchronized); Algorithm 1's estimates and
    the fixed statistics get no gradient."""
    (x, batch_weight, batch_bias, weight, bias, mean, var, batch_mean,
     batch_var, count) = ctx.saved_tensors
    differentiable = torch.is_grad_enabled()  # create_graph=True
    length = math.prod(x.shape[2:])
    in_dtype = x.dtype
    dtype = mean.dtype
    if x.dtype != dtype:
        x, dy = x.to(dtype), dy.to(dtype)
    grad_a, grad_b = row_sums(dy, x, generic=differentiable)
    (dm, dv, dbm, dbv, d_bw, d_bb, d_w, d_b, coef_a) = coefficients_vjp(
        grad_a, grad_b, mean, var, batch_mean, batch_var, batch_weight,
        batch_bias, weight, ctx.num_groups, ctx.eps)
    dm, dv = dm + d_mean, dv + d_var
    if ctx.stats_mode == BATCH:
        dbm, dbv = dbm + d_batch_mean, dbv + d_batch_var
        if ctx.group_name is not None:
            # every process's loss depends on the common statistics
            dbm, dbv = torch.ops.mmbcn.bcn_all_reduce_sum(
                torch.stack([dbm, dbv]), ctx.group_name).unbind(0)
        # Eq. 13's batch moments over the count elements of each channel:
        # d mu / d mean_nc = L / count, d sigma^2 / d mean_nc =
        # 2 L (mean_nc - mu) / count, d sigma^2 / d var_nc = L / count.
        per = length / count.clamp(min=1)
        dm = dm + per * (dbm + 2 * dbv * (mean - batch_mean))
        dv = dv + per * dbv
    slope = 2.0 * dv / length
    offset = dm / length - slope * mean
    if differentiable:
        dx = (_expand(coef_a, x) * dy + _expand(slope, x) * x +
              _expand(offset, x))
    else:
        dx = apply_affine(x, slope.to(x.dtype), offset.to(x.dtype))
        dx.addcmul_(dy, _expand(coef_a.to(x.dtype), x))
    grads = [g.to(p.dtype) for g, p in ((d_bw, batch_weight),
                                        (d_bb, batch_bias), (d_w, weight),
                                        (d_b, bias))]
    return (dx.to(in_dtype), None, None, None, *grads, None, None, None,
            None, None)


def _expand(t: Tensor, x: Tensor) -> Tensor:
    return t.view(t.shape + (1, ) * (x.dim() - 2))


bcn_reference.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op('mmbcn::bcn_all_reduce_sum', mutates_args=())
def bcn_all_reduce_sum(t: Tensor, group_name: str) -> Tensor:
    """The sum of ``t`` over the processes of a group (SyncBCN's backward
    pass), as one operator that compiled graphs call as it is."""
    out = t.clone()
    dist.all_reduce(out, group=_resolve(group_name))
    return out


@bcn_all_reduce_sum.register_fake
def _(t, group_name):
    return torch.empty_like(t)


#: Every device BCN runs on, every dtype, layout and mode, synchronized
#: statistics: the reference, ``auto``'s last resort.
BACKEND = Backend('python', forward, devices={'cpu', 'cuda', 'mps', 'xpu'},
                  priority=0)
