# Copyright (c) mmbcn contributors. All rights reserved.
"""Per-channel statistics combined across torch.distributed processes.

Each process contributes its element count, so processes with different
(or zero) batch sizes combine exactly as the concatenated batch would.
Every process must call these functions from the same layers in the same
order, as with SyncBatchNorm.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_reduce as _all_reduce_autograd


def distributed_world(group=None) -> int:
    """Number of processes in ``group`` (1 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _all_reduce(t: Tensor, group) -> Tensor:
    if t.requires_grad and torch.is_grad_enabled():
        return _all_reduce_autograd(t, group=group)
    t = t.clone()
    dist.all_reduce(t, group=group)
    return t


def all_reduce_means(count: Tensor, *means: Tensor,
                     group=None) -> Tuple[Tensor, ...]:
    """Count-weighted averages across processes of per-channel means.

    Returns ``(total_count, mean_1, mean_2, ...)``; each mean is 0 where the
    total count is 0. Not differentiable (used for Algorithm 1's estimates).
    """
    packed = torch.cat([count.view(1)] + [count * m for m in means])
    dist.all_reduce(packed, group=group)
    total = packed[0]
    sums = packed[1:].view(len(means), -1)
    return (total, *(sums / total.clamp(min=1)))


def all_reduce_moments(count: Tensor, mean: Tensor, var: Tensor,
                       group=None) -> Tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance of the concatenated batch across processes,
    differentiable (SyncBCN's large-batch step).

    Two collectives keep it free of E[x^2] - E[x]^2 cancellation: first the
    global mean, then each process's sum of squared deviations about it.
    """
    packed = _all_reduce(torch.cat([count.view(1), count * mean]), group)
    total = packed[0].detach()
    global_mean = packed[1:] / total.clamp(min=1)
    m2 = count * (var + (mean - global_mean).pow(2))
    global_var = _all_reduce(m2, group) / total.clamp(min=1)
    return total, global_mean, global_var


def local_count(x: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Number of elements per channel in ``x`` (N, C, *), as a tensor."""
    return torch.tensor(float(x.numel() // max(x.shape[1], 1)),
                        dtype=dtype or torch.float32, device=x.device)


def check_same_layer(layer_id: int, channels: int, group=None) -> None:
    """Raise unless every process of ``group`` reaches this call from the
    same BCN layer: ``layer_id`` (construction order) and ``channels``
    summed with their squares are equal on all processes only if each
    process contributed the same values. Run once per layer, at its first
    synchronization: statistics of different layers are never mixed, and
    a process that skips a layer fails here instead of hanging in a
    later collective of another shape."""
    values = torch.tensor([layer_id, layer_id * layer_id, channels,
                           channels * channels], dtype=torch.float64)
    if dist.get_backend(group) == 'nccl':
        values = values.cuda()
    dist.all_reduce(values, group=group)
    world = dist.get_world_size(group)
    ids, id_sq, ch, ch_sq = values.tolist()
    if world * id_sq != ids * ids or world * ch_sq != ch * ch:
        raise RuntimeError(
            'BCN: processes reached their statistics synchronization from '
            f'different layers (this process: layer #{layer_id} with '
            f'{channels} channels). Every process must run the same BCN '
            'layers in the same order (same model, same branches taken), as '
            'with SyncBatchNorm; a layer skipped on one process (e.g. a '
            'head without samples) must still be called with an empty '
            'batch')
