# Copyright (c) mmbcn contributors. All rights reserved.
r"""Channel statistical difference, StatDiff (paper Sec. 2.3, Eq. 8).

For a group g of channels that a layer normalizes together, with running
mean :math:`\mu^r_c` and standard deviation :math:`\sigma_c` per channel,

.. math::

    \text{StatDiff}(g) = \frac{\sqrt{E_{c \in g}[(\mu^r_c)^2]
        - (E_{c \in g}[\mu^r_c])^2}}{E_{c \in g}[\sigma_c]}

the (population) standard deviation of the group's channel means divided by
the mean of its channel standard deviations. It is 0 when every channel of
the group has the same mean (BatchNorm, Eq. 5) and grows as channels drift
apart, which leaves some of them under-represented after the group is
normalized together (Eq. 2).
"""
import torch
from torch import Tensor


def group_view(values: Tensor,
               num_groups: int,
               name: str = 'values') -> Tensor:
    """``values`` (C,) as (G, C/G): groups of contiguous channels, the way
    GroupNorm and BCN's group step form them."""
    if values.dim() != 1:
        raise ValueError(f'{name} must be one value per channel, shape (C,), '
                         f'got shape {tuple(values.shape)}')
    channels = values.shape[0]
    if (isinstance(num_groups, bool) or not isinstance(num_groups, int)
            or num_groups <= 0 or channels % num_groups != 0):
        raise ValueError(f'num_groups={num_groups!r} must be a positive '
                         f'integer dividing the {channels} channels')
    return values.reshape(num_groups, channels // num_groups)


def stat_diff(mean, std, num_groups: int) -> Tensor:
    r"""StatDiff (Eq. 8) of each of ``num_groups`` groups of contiguous
    channels.

    Args:
        mean: Per-channel running means :math:`\mu^r_c`, shape (C,)
            (tensor or array-like).
        std: Per-channel standard deviations :math:`\sigma_c`, shape (C,),
            non-negative.
        num_groups (int): Groups G; must divide C. LayerNorm is G = 1;
            G = C (each channel alone, as BatchNorm normalizes) gives 0.

    Returns:
        Tensor: Shape (G,), one StatDiff per group, in the floating dtype of
        the inputs (float32 for integer input). A group whose channels all
        have zero standard deviation gives ``nan`` (0 / 0) or ``inf``.
    """
    mean = torch.as_tensor(mean)
    std = torch.as_tensor(std)
    dtype = torch.promote_types(mean.dtype, std.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    mean, std = mean.to(dtype), std.to(dtype)
    if mean.shape != std.shape:
        raise ValueError(f'mean and std must have the same shape, got '
                         f'{tuple(mean.shape)} and {tuple(std.shape)}')
    if bool((std < 0).any()):
        raise ValueError('std must be non-negative (standard deviations, '
                         'not log-scales)')
    mean_g = group_view(mean, num_groups, 'mean')
    std_g = group_view(std, num_groups, 'std')
    # Eq. 8, numerator: sqrt(E[mu^2] - E[mu]^2), the population standard
    # deviation of the means, evaluated in its centred form
    # sqrt(E[(mu - E[mu])^2]) (equal, and never negative under rounding).
    spread = (mean_g - mean_g.mean(1, keepdim=True)).pow(2).mean(1).sqrt()
    # Eq. 8, denominator: E[sigma].
    return spread / std_g.mean(1)
