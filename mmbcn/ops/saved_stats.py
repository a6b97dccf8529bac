# Copyright (c) mmbcn contributors. All rights reserved.
"""The O(N*C) statistics the kernel backends keep from the forward pass
for the backward pass: one float64 tensor, in the order of :data:`FIELDS`.

The ``cpu`` kernel (csrc/bcn_cpu.cpp's ``Stats``) returns it from its
forward operator and the ``triton`` backend allocates it; both compute
the same quantities (Qiao et al., Sec. 3):

* per (sample, channel): ``mean`` and ``var``, the biased moments of
  ``x``; ``dev``, the mean of ``x_dot`` (Eq. 13's output) minus its
  group's mean (Eq. 15);
* per channel: ``a`` = gamma^b / sigma_hat, ``inv_std`` = 1 / sigma_hat
  and ``batch_mean`` = mu_hat, the batch step's statistics (Eq. 13);
* per (sample, group): ``r`` = 1 / sigma_g and ``s`` = gamma^c * r, the
  group step's (Eq. 15).

tests/test_cpu_backend.py reads the ``cpu`` operator's output back with
this table and checks each field against its definition.
"""
from typing import Dict, Tuple

from torch import Tensor

#: (name, size per: ``'nc'``, ``'c'`` or ``'ng'``) in memory order.
FIELDS = (('mean', 'nc'), ('var', 'nc'), ('dev', 'nc'), ('a', 'c'),
          ('inv_std', 'c'), ('batch_mean', 'c'), ('r', 'ng'), ('s', 'ng'))


def sizes(n: int, c: int, groups: int) -> Tuple[Tuple[str, int], ...]:
    """(name, number of elements) of each field, in memory order."""
    per = {'nc': n * c, 'c': c, 'ng': n * groups}
    return tuple((name, per[unit]) for name, unit in FIELDS)


def total(n: int, c: int, groups: int) -> int:
    """Elements of the whole tensor."""
    return sum(size for _, size in sizes(n, c, groups))


def split(stats: Tensor, n: int, c: int, groups: int) -> Dict[str, Tensor]:
    """The fields of ``stats`` as views, by name."""
    out, at = {}, 0
    for name, size in sizes(n, c, groups):
        out[name] = stats[at:at + size]
        at += size
    return out
