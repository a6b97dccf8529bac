# Copyright (c) mmbcn contributors. All rights reserved.
r"""Weight Standardization (WS): a convolution whose kernel is standardized
per output channel at every forward. Needs torch alone.

Paper Sec. 2, "Why WS helps": WS constrains the weight
:math:`\mathbf{W} \in \mathbb{R}^{O \times I}` of a convolution (O output
channels, each with I = in_channels x kernel size inputs) so that for
every output channel c

* Eq. 9: :math:`\sum_{i=1}^I \mathbf{W}_{c,i} = 0,\;
  \sum_{i=1}^I \mathbf{W}_{c,i}^2 = 1`,

which by Eqs. 10-12 passes the inputs' statistics on to the outputs
(:math:`\mu^{out}_c \approx 0`, :math:`\sigma^{out}_c \approx
\sigma^{in}_1`). As in the WS paper the equation cites and the authors'
released models, each row is standardized to zero mean and unit unbiased
variance, i.e. :math:`\sum_i \mathbf{W}_{c,i}^2 = I - 1` instead of 1:
one constant for all channels of a layer, which the normalization layer
after the convolution removes. Two published formulas:

* ``'var'`` (default; the authors' ImageNet BCN+WS models):
  :math:`\hat W = (W - \mu) / \sqrt{\sigma^2_{unbiased} + \epsilon}`
* ``'std'`` (the authors' DeepLabV3 model; mmcv's ``ConvWS``):
  :math:`\hat W = (W - \mu) / (\sigma_{unbiased} + \epsilon)`

    from mmbcn.ops import WSConv2d
"""
import math
import numbers

import torch
from torch import Tensor, nn

WS_FORMULAS = ('var', 'std')


def standardize_weight(weight: Tensor,
                       eps: float = 1e-5,
                       formula: str = 'var') -> Tensor:
    """Standardize each output channel of ``weight`` (C_out, C_in, *k):
    zero mean (Eq. 9, first sum) and unit unbiased variance (Eq. 9, second
    sum, up to the constant I - 1; see the module docstring)."""
    flat = weight.flatten(1)  # (O, I): row c is W_c of Eq. 9
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


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is standardized per output channel at
    every forward (see the module docstring for ``formula``).

    ``import mmbcn`` registers it as ``WSConv``, so any OpenMMLab config
    builds it with ``conv_cfg=dict(type='WSConv')``. The parameter is the
    raw ``weight``, as in the authors' checkpoints;
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
