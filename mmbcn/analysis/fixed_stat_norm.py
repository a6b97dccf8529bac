# Copyright (c) mmbcn contributors. All rights reserved.
r"""Normalization to pre-defined statistics (paper Sec. 2.2, Eq. 6-7,
Fig. 1): how far a model is from BatchNorm, made a knob.

Each channel c is first normalized with its batch statistics as BatchNorm
does (Eq. 1), then given a fixed mean :math:`\hat\mu_c` and standard
deviation :math:`\hat\sigma_c` drawn once at construction (Eq. 6), then the
trainable affine :math:`\gamma_c, \beta_c` (Eq. 7). ``sigma_mu =
sigma_sigma = 0`` is BatchNorm; larger values put the channels at
different statistics, as channel-based normalizations do, and the model
closer to elimination singularities.
"""
from typing import Optional

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn


def draw_target_statistics(num_features: int, sigma_mu: float,
                           sigma_sigma: float,
                           generator: Optional[torch.Generator] = None):
    r"""Eq. 6: :math:`\hat\mu_c \sim N(0, \sigma_\mu)` and
    :math:`\hat\sigma_c = e^{s_c}` with :math:`s_c \sim N(0,
    \sigma_\sigma)`, for each of ``num_features`` channels (the second
    argument of N is the standard deviation). Returns (mean, std)."""
    if sigma_mu < 0 or sigma_sigma < 0:
        raise ValueError(f'sigma_mu={sigma_mu} and sigma_sigma='
                         f'{sigma_sigma} must be >= 0')
    z_mu = torch.randn(num_features, generator=generator)
    z_sigma = torch.randn(num_features, generator=generator)
    return sigma_mu * z_mu, torch.exp(sigma_sigma * z_sigma)


@MODELS.register_module('FixedStatNorm')
class FixedStatNorm(nn.Module):
    r"""Eq. 7: :math:`Y_c = \gamma_c (\hat\sigma_c (X_c - \mu_c) / \sigma_c
    + \hat\mu_c) + \beta_c`.

    :math:`\mu_c, \sigma_c` are batch statistics over (N, H, W) in training
    (running averages in evaluation, as BatchNorm); :math:`\hat\mu_c,
    \hat\sigma_c` are the fixed buffers ``target_mean``/``target_std``
    (Eq. 6); ``weight``/``bias`` are :math:`\gamma_c, \beta_c`.

    Args:
        num_features (int): Channels C.
        sigma_mu (float): Standard deviation of the target means.
        sigma_sigma (float): Standard deviation of the log target stds.
        seed (int | None): Seed of the draw (None: torch's global RNG).
        eps (float): Added to the variance. Default 1e-5.
        momentum (float): Running-average factor. Default 0.1.
    """

    _abbr_ = 'fsn'

    def __init__(self,
                 num_features: int,
                 sigma_mu: float = 0.0,
                 sigma_sigma: float = 0.0,
                 seed: Optional[int] = None,
                 eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        generator = None
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        target_mean, target_std = draw_target_statistics(
            num_features, sigma_mu, sigma_sigma, generator)
        self.num_features = num_features
        self.sigma_mu = sigma_mu
        self.sigma_sigma = sigma_sigma
        # Eq. 1 (BatchNorm without affine): X -> (X - mu_c) / sigma_c.
        self.standardize = nn.BatchNorm2d(
            num_features, eps=eps, momentum=momentum, affine=False)
        self.register_buffer('target_mean', target_mean)
        self.register_buffer('target_std', target_std)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f'FixedStatNorm: expected input of shape (N, '
                             f'{self.num_features}, H, W), got '
                             f'{tuple(x.shape)}')
        view = (1, -1, 1, 1)
        x_hat = self.standardize(x)
        # Eq. 7: gamma_c * (sigma_hat_c * x_hat + mu_hat_c) + beta_c.
        y = self.target_std.view(view) * x_hat + self.target_mean.view(view)
        return self.weight.view(view) * y + self.bias.view(view)

    def extra_repr(self) -> str:
        return (f'{self.num_features}, sigma_mu={self.sigma_mu}, '
                f'sigma_sigma={self.sigma_sigma}')
