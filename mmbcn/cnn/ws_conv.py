# Copyright (c) mmbcn contributors. All rights reserved.
r"""Weight Standardization (WS) convolution: ``WSConv``.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and
Weight Standardization": each output channel's kernel is standardized over
(in_channels, *kernel) before the convolution. Two published formulas:

* ``'var'`` (default; the authors' ImageNet BCN+WS models):
  :math:`\hat W = (W - \mu) / \sqrt{\sigma^2_{unbiased} + \epsilon}`
* ``'std'`` (the authors' DeepLabV3 model; mmcv's ``ConvWS``):
  :math:`\hat W = (W - \mu) / (\sigma_{unbiased} + \epsilon)`
"""
import math
import numbers

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

WS_FORMULAS = ('var', 'std')


def standardize_weight(weight: Tensor,
                       eps: float = 1e-5,
                       formula: str = 'var') -> Tensor:
    """Standardize each output channel of ``weight`` (C_out, C_in, *k)."""
    flat = weight.flatten(1)
    var, mean = torch.var_mean(flat, dim=1, keepdim=True, correction=1)
    if formula == 'var':
        inv_std = torch.rsqrt(var + eps)
    elif formula == 'std':
        inv_std = 1.0 / (var.sqrt() + eps)
    else:
        raise ValueError(f'WS formula must be one of {WS_FORMULAS}, '
                         f'got {formula!r}')
    return ((flat - mean) * inv_std).view_as(weight)


def check_eps(eps) -> None:
    """Refuse an ``eps`` that would make the standardized weight infinite,
    NaN or zero (``inf``, ``nan``, ``0``, negative, not a number)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f'WSConv: eps={eps!r} must be a number (e.g. 1e-5), '
                        f'got a {type(eps).__name__}')
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f'WSConv: eps={eps!r} must be a finite number > 0 (e.g. the '
            'default 1e-5): inf gives an all-zero weight, nan an all-NaN '
            'output, and 0 or less an infinite or NaN weight for a '
            'constant kernel')


@MODELS.register_module('WSConv')
class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is standardized per output channel at
    every forward (see the module docstring for ``formula``).

    Build it from any OpenMMLab config with ``conv_cfg=dict(type='WSConv')``.
    The parameter is the raw ``weight``, as in the authors' checkpoints;
    :func:`standardize_weight` gives the weight actually applied.

    Args:
        eps (float): Added to the variance (``'var'``) or the standard
            deviation (``'std'``); a finite number > 0, so that a constant
            kernel gives a finite weight. Default 1e-5.
        formula (str): ``'var'`` (default) or ``'std'``.
        Other arguments as :class:`torch.nn.Conv2d`.
    """

    def __init__(self, *args, eps: float = 1e-5, formula: str = 'var',
                 **kwargs):
        super().__init__(*args, **kwargs)
        if formula not in WS_FORMULAS:
            raise ValueError(f'WSConv: formula must be one of {WS_FORMULAS}, '
                             f'got {formula!r}')
        check_eps(eps)
        if self.weight[0].numel() < 2:
            raise ValueError(
                'WSConv: each output channel needs at least 2 weights to be '
                f'standardized, got kernel shape {tuple(self.weight.shape)}')
        self.eps = eps
        self.formula = formula

    def standardized_weight(self) -> Tensor:
        return standardize_weight(self.weight, self.eps, self.formula)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() +
                f', eps={self.eps}, formula={self.formula!r}')
