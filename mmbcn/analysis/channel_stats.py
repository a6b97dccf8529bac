# Copyright (c) mmbcn contributors. All rights reserved.
"""Under-represented channels (paper Sec. 2.2-2.3, Eq. 4, Fig. 2).

In the block ``ReLU(Norm(Conv(x)))`` (Eq. 4) a channel is *dead* (at an
elimination singularity) when its normalized activations are never above 0,
so that ReLU zeroes all of them and no gradient reaches it; it is
*under-represented* when its activation scale after ReLU is tiny next to the
other channels normalized with it (Fig. 2).

Both measures are computed from per-channel summaries that add up over
batches (:class:`ActivationSummary`), so a caller may measure one batch or
a whole pass over a data set.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from .stat_diff import group_view


def channel_rows(x: Tensor, channel_dim: int = 1) -> Tensor:
    """``x`` as (C, M): one row per channel, every other dimension
    flattened (batch and spatial positions alike)."""
    if x.dim() < 2:
        raise ValueError('activations need a batch and a channel dimension, '
                         f'got shape {tuple(x.shape)}')
    x = x.detach()
    return x.movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1)


@dataclass
class ActivationSummary:
    """Per-channel summary of activations ``y`` of a normalization layer:
    ``max`` of y and ``sum_sq`` of ReLU(y)^2 over ``count`` values each."""
    max: Tensor
    sum_sq: Tensor
    count: int

    @classmethod
    def of(cls, x: Tensor, channel_dim: int = 1) -> 'ActivationSummary':
        rows = channel_rows(x, channel_dim).float()
        if rows.shape[1] == 0:
            raise ValueError('activations hold no values per channel, shape '
                             f'{tuple(x.shape)}')
        return cls(
            max=rows.amax(1),
            sum_sq=rows.clamp(min=0).pow(2).sum(1),
            count=rows.shape[1])

    def merge(self, other: 'ActivationSummary') -> 'ActivationSummary':
        """Summary of both sets of activations (same channels)."""
        if self.max.shape != other.max.shape:
            raise ValueError('cannot merge summaries of '
                             f'{self.max.numel()} and {other.max.numel()} '
                             'channels')
        return ActivationSummary(
            torch.maximum(self.max, other.max), self.sum_sq + other.sum_sq,
            self.count + other.count)

    def dead(self) -> Tensor:
        """(C,) bool: channels whose activations after ReLU are all 0,
        i.e. whose largest normalized activation is <= 0 (Eq. 4)."""
        return self.max <= 0

    def scale(self) -> Tensor:
        """(C,) activation scale after ReLU: the root mean square
        ``sqrt(E[ReLU(y)^2])``."""
        return (self.sum_sq / self.count).sqrt()

    def small_scale(self, num_groups: int, ratio: float = 0.01) -> Tensor:
        """(C,) bool: channels whose scale is below ``ratio`` times the
        largest scale in their group of contiguous channels. A dead channel
        counts when its group has a live one; with G = C (each channel its
        own group, as BatchNorm normalizes) no channel counts."""
        if not 0 < ratio < 1:
            raise ValueError(f'ratio={ratio} must lie in (0, 1)')
        scale = group_view(self.scale(), num_groups, 'scale')
        largest = scale.amax(1, keepdim=True)
        return (scale < ratio * largest).reshape(-1)


def dead_channel_fraction(x: Tensor, channel_dim: int = 1) -> float:
    """Fraction of channels of ``x`` (normalized activations, before or
    after ReLU) that ReLU zeroes everywhere in the batch."""
    return ActivationSummary.of(x, channel_dim).dead().float().mean().item()


def small_scale_fraction(x: Tensor,
                         num_groups: int,
                         ratio: float = 0.01,
                         channel_dim: int = 1) -> float:
    """Fraction of channels of ``x`` whose activation scale after ReLU is
    below ``ratio`` (default 1%) of the largest in their group."""
    summary = ActivationSummary.of(x, channel_dim)
    return summary.small_scale(num_groups, ratio).float().mean().item()
