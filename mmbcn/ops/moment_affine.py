# Copyright (c) mmbcn contributors. All rights reserved.
r"""The mathematics of Batch-Channel Normalization (BCN) as ``A * x + B``.

Equation numbers refer to Qiao et al., "Rethinking Normalization and
Elimination Singularity in Neural Networks" (Sec. 3).

Both steps of BCN are affine in ``x`` once their statistics are known:

* the batch step (Eq. 13) is ``x_dot = a_c * x + b_c`` with
  ``a_c = gamma^b_c / sqrt(sigma_hat_c^2 + eps)`` and
  ``b_c = beta^b_c - mu_hat_c * a_c``;
* the group step (Eq. 15) is a per-sample normalization of each channel group
  of ``x_dot`` followed by a per-group affine.

The moments of ``x_dot`` over a (sample, group) follow from the moments of
``x`` over each (sample, channel) by the parallel-variance formula, so the
whole layer is ``y = A[n, c] * x + B[n, c]`` with ``A`` and ``B`` computed
from O(N*C) numbers. :func:`bcn_coefficients` computes them;
:func:`coefficients_vjp` is their vector-Jacobian product, from which
the backward pass touches the full-size tensors only in per-(n, c)
reductions (:func:`row_sums`) and elementwise passes.

Everything runs on public PyTorch operations (``torch.var_mean``,
``addcmul``, ``einsum``, sums), on every device, dtype and layout: the
fast path on CPU is the ``cpu`` backend's kernel.

This module is the ``python`` backend's mathematics (see
:mod:`.python_backend`), the reference the ``cpu`` and ``triton`` backends
are tested against, and the path for synchronized statistics.
"""
import math
from typing import Tuple

import torch
from torch import Tensor


def reduce_dims(x: Tensor) -> Tuple[int, ...]:
    """Dimensions of ``x`` (N, C, *) over which per-(n, c) moments run."""
    return tuple(range(2, x.dim()))


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype BCN's statistics are computed in for input ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channel_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and biased variance of ``x``, in float32
    (float64 for float64 input), each of shape (N, C)."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.numel() == 0:
        empty = x.new_zeros(x.shape[:2])
        return empty, empty.clone()
    var, mean = torch.var_mean(x, dim=reduce_dims(x), correction=0)
    # A row whose moments overflow: NaN, so that its group's output turns
    # NaN as nn.GroupNorm's does instead of a finite constant.
    return mean, var.masked_fill(torch.isinf(var), math.nan)


def batch_moments(mean: Tensor, var: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance over (N, *) from per-(n, c)
    moments of equally sized samples (the parallel-variance formula):
    ``var_c = E_n[var_nc] + E_n[(mean_nc - mean_c)^2]``."""
    batch_mean = mean.mean(0)
    batch_var = var.mean(0) + (mean - batch_mean).pow(2).mean(0)
    return batch_mean, batch_var


def batch_affine(batch_mean: Tensor, batch_var: Tensor, batch_weight: Tensor,
                 batch_bias: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    r"""Eq. 13 as an affine map: ``x_dot = gamma^b (x - mu_hat) /
    sqrt(sigma_hat^2 + eps) + beta^b = a x + b`` with ``a = gamma^b /
    sqrt(sigma_hat^2 + eps)`` and ``b = beta^b - mu_hat a``, per channel."""
    a = batch_weight * torch.rsqrt(batch_var + eps)
    return a, batch_bias - batch_mean * a


def bcn_coefficients(mean: Tensor, var: Tensor, batch_mean: Tensor,
                     batch_var: Tensor, batch_weight: Tensor,
                     batch_bias: Tensor, weight: Tensor, bias: Tensor,
                     num_groups: int, eps: float) -> Tuple[Tensor, Tensor]:
    r"""Per-(n, c) scale ``A`` and shift ``B`` with ``BCN(x) = A * x + B``.

    Args:
        mean, var: (N, C) mean and biased variance of ``x`` over each
            (sample, channel).
        batch_mean, batch_var: (C,) the batch step's statistics
            :math:`\hat\mu_c`, :math:`\hat\sigma_c^2` (from the batch, from
            running averages, or the estimates of Algorithm 1).
        batch_weight, batch_bias: (C,) :math:`\gamma^b`, :math:`\beta^b`.
        weight, bias: (G,) the per-group :math:`\gamma^c`, :math:`\beta^c`.
    """
    n, c = mean.shape
    a, b = batch_affine(batch_mean, batch_var, batch_weight, batch_bias, eps)
    # Moments of x_dot over each (n, c), grouped as (N, G, C/G) (Eq. 15's
    # reshape into G groups of contiguous channels).
    grouped = (n, num_groups, c // num_groups)
    mean_dot = (a * mean + b).view(grouped)
    var_dot = (a * a * var).view(grouped)
    # Eq. 15: mu_bg and sigma_bg^2 of x_dot over each (sample, group).
    group_mean = mean_dot.mean(2, keepdim=True)
    group_var = var_dot.mean(2, keepdim=True) + (
        mean_dot - group_mean).pow(2).mean(2, keepdim=True)
    scale = weight.view(1, -1, 1) * torch.rsqrt(group_var + eps)
    # y = scale * (a*x + b - mu_bg) + beta^c_g = A*x + B.
    coef_a = scale * a.view(grouped[1:])
    coef_b = scale * (b.view(grouped[1:]) - group_mean) + bias.view(
        1, -1, 1)
    return coef_a.reshape(n, c), coef_b.reshape(n, c)


def coefficients_vjp(grad_a: Tensor, grad_b: Tensor, mean: Tensor,
                     var: Tensor, batch_mean: Tensor, batch_var: Tensor,
                     batch_weight: Tensor, batch_bias: Tensor,
                     weight: Tensor, num_groups: int,
                     eps: float) -> Tuple[Tensor, ...]:
    r"""The vector-Jacobian product of :func:`bcn_coefficients`: given
    ``grad_a``, ``grad_b`` (N, C), the gradients with respect to ``mean``,
    ``var`` (N, C), ``batch_mean``, ``batch_var``, ``batch_weight``,
    ``batch_bias`` (C) and ``weight``, ``bias`` (G), in that order, then
    the forward's ``A`` (N, C), which the input's gradient needs and the
    product computes on the way.

    The chain rule through the forward's steps, last step first, in
    differentiable operations (so that it can itself be differentiated):
    ``A = s a``, ``B = s (b - mu_g) + beta^c`` with ``s = gamma^c /
    sqrt(sigma_g^2 + eps)``; Eq. 15's group moments of ``mean_dot = a *
    mean + b`` and ``var_dot = a^2 var``; Eq. 13's ``a = gamma^b /
    sqrt(sigma_hat^2 + eps)``, ``b = beta^b - mu_hat a``.
    """
    n, c = mean.shape
    g, k = num_groups, c // num_groups
    grouped = (n, g, k)
    # Forward quantities (as bcn_coefficients computes them).
    inv_b = torch.rsqrt(batch_var + eps)
    a = (batch_weight * inv_b).view(1, g, k)
    b = (batch_bias - batch_mean * batch_weight * inv_b).view(1, g, k)
    m, v = mean.view(grouped), var.view(grouped)
    mean_dot = a * m + b
    group_mean = mean_dot.mean(2, keepdim=True)
    dev = mean_dot - group_mean
    group_var = (a * a * v).mean(2, keepdim=True) + dev.pow(2).mean(
        2, keepdim=True)
    inv_g = torch.rsqrt(group_var + eps)
    scale = weight.view(1, g, 1) * inv_g
    g_a, g_b = grad_a.view(grouped), grad_b.view(grouped)
    # A = scale * a, B = scale * (b - group_mean) + bias.
    d_scale = (g_a * a + g_b * (b - group_mean)).sum(2, keepdim=True)
    d_bias = g_b.sum((0, 2))
    d_weight = (d_scale * inv_g).sum((0, 2))
    d_group_var = d_scale * weight.view(1, g, 1) * -0.5 * inv_g.pow(3)
    d_group_mean = -(g_b * scale).sum(2, keepdim=True)
    # Eq. 15: group_mean = E_k[mean_dot], group_var = E_k[var_dot] +
    # E_k[(mean_dot - group_mean)^2] (its group_mean term sums to 0).
    d_mean_dot = (2 * d_group_var * dev + d_group_mean) / k
    d_var_dot = d_group_var / k
    # mean_dot = a * m + b, var_dot = a^2 * v.
    d_mean = (d_mean_dot * a).reshape(n, c)
    d_var = (d_var_dot * a * a * torch.ones_like(v)).reshape(n, c)
    d_a = (g_a * scale + d_mean_dot * m + 2 * d_var_dot * a * v).sum(0)
    d_b = (g_b * scale + d_mean_dot).sum(0)
    d_a, d_b = d_a.reshape(c), d_b.reshape(c)
    # Eq. 13: b = beta^b - mu_hat * a, a = gamma^b * inv_b.
    d_a = d_a - d_b * batch_mean
    d_batch_mean = -d_b * a.reshape(c)
    d_batch_weight = d_a * inv_b
    d_batch_var = d_a * batch_weight * -0.5 * inv_b.pow(3)
    coef_a = (scale * a).reshape(n, c)
    return (d_mean, d_var, d_batch_mean, d_batch_var, d_batch_weight, d_b,
            d_weight, d_bias, coef_a)


def _expand(t: Tensor, x: Tensor) -> Tensor:
    return t.view(t.shape + (1, ) * (x.dim() - 2))


def apply_affine(x: Tensor, coef_a: Tensor, coef_b: Tensor) -> Tensor:
    """``A * x + B`` with (N, C) coefficients, in ``x``'s dtype."""
    y = torch.addcmul(_expand(coef_b, x), x, _expand(coef_a, x))
    return y.to(x.dtype)


def row_sums(dy: Tensor,
             x: Tensor,
             generic: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-(n, c) sums of ``dy * x`` and of ``dy``, each (N, C);
    ``generic``: in differentiable operations (a second derivative)."""
    if generic:
        return (dy * x).sum(reduce_dims(x)), dy.sum(reduce_dims(x))
    return _dot(dy, x), dy.sum(reduce_dims(x))


def _dot(dy: Tensor, x: Tensor) -> Tensor:
    """Per-(n, c) sum of ``dy * x`` without a full-size temporary when the
    layout allows a batched matrix product."""
    n, c = x.shape[:2]
    if x.is_contiguous() and dy.is_contiguous():
        rows = (n * c, math.prod(x.shape[2:]))
        return torch.einsum('nl,nl->n', dy.reshape(rows),
                            x.reshape(rows)).view(n, c)
    return (dy * x).sum(reduce_dims(x))
