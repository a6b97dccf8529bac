# Copyright (c) mmbcn contributors. All rights reserved.
"""The ``triton`` backend: BCN in six Triton launches per training step
(three forward, three backward; kernels in :mod:`.triton_kernels`).

Serves CUDA tensors, and CPU tensors under ``TRITON_INTERPRET=1`` (how
the tests run it without a GPU); float16, bfloat16, float32 and float64,
with statistics in float32 (float64 for float64 input); NCHW-contiguous
and channels_last. The running statistics are updated on the device:
no host synchronization, nothing read back (CUDA-graph friendly). Only
``x`` and O(N*C) statistics are kept for the backward pass. The
reductions over H*W are split across programs, so a batch of one image
fills the GPU, and merged in a fixed order (deterministic, no atomics).
Synchronized estimates (``estimate=True`` under torch.distributed) combine
the O(C) per-channel statistics across processes between the statistics
pass and the rest; SyncBCN's large-batch mode takes the python backend.
"""
import functools
import os
import struct
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import saved_stats
from .backends import Backend
from .call import BATCH, ESTIMATE, FIXED, MODE_CODES, BCNCall
from .distributed import all_reduce_means

try:
    import triton
    _IMPORT_ERROR: Optional[str] = None
except ImportError as error:
    triton = None
    _IMPORT_ERROR = str(error)
#: Target number of programs of the reduction passes, per streaming
#: multiprocessor (several resident programs hide memory latency).
PROGRAMS_PER_SM = 4
#: Elements of x one program's tile holds.
TILE = 4096


def _interpret() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def unavailable() -> Optional[str]:
    if triton is None:
        return f'Triton is not installed ({_IMPORT_ERROR})'
    return None


def refuse(call: BCNCall) -> Optional[str]:
    device = call.x.device.type
    if device == 'cpu' and not _interpret():
        return ('it runs CPU tensors only under TRITON_INTERPRET=1 (set '
                'before Triton is imported), for testing')
    if device == 'cuda' and _interpret():
        return 'TRITON_INTERPRET=1 is set: it runs CPU tensors only'
    if call.x.dim() < 3 or call.x.numel() == 0:
        return 'it needs a non-empty (N, C, L, ...) input'
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return ('tracers and torch.compile record PyTorch operations, and '
                'its kernels are not one (the python backend is)')
    if call.synchronized and call.mode == BATCH:
        return ('it synchronizes Algorithm 1\'s estimates across processes '
                'but not yet the large-batch statistics of SyncBCN (the '
                'python backend serves those)')
    return None


def forward(call: BCNCall) -> Tensor:
    x = call.x
    # How far the statistics move towards the batch's: the momentum, or
    # Algorithm 1's r; with ``cumulative`` the kernel uses
    # 1 / num_batches_tracked instead.
    lerp_weight, cumulative = 0.0, False
    if call.mode == BATCH:
        call.num_batches_tracked.add_(1)
        cumulative = call.momentum is None
        lerp_weight = 0.0 if cumulative else float(call.momentum)
    elif call.mode == ESTIMATE:
        lerp_weight = float(call.update_rate)
    params = [call.batch_weight, call.batch_bias, call.weight, call.bias]
    if torch.is_grad_enabled() and (x.requires_grad
                                    or any(p.requires_grad for p in params)):
        y, new_mean, new_var = TritonBCN.apply(x, call, lerp_weight,
                                               cumulative, *params)
    else:
        y, new_mean, new_var, _ = _forward(x, call, lerp_weight, cumulative)
    if call.mode != FIXED:
        with torch.no_grad():
            call.running_mean.copy_(new_mean)
            call.running_var.copy_(new_var)
    return y


class _Plan:
    """Launch geometry for one (N, C, L) shape and layout."""

    def __init__(self, x: Tensor):
        n, c = x.shape[:2]
        length = x[0, 0].numel()
        self.n, self.c, self.length = n, c, length
        # channels_last: C is the fastest dimension, tiles run along it.
        channels_fast = not x.is_contiguous() and length > 1
        if channels_fast:
            self.block_c = min(triton.next_power_of_2(c), 128)
            self.block_l = max(1, min(TILE // self.block_c,
                                      triton.next_power_of_2(length)))
        else:
            self.block_l = min(triton.next_power_of_2(length), 1024)
            self.block_c = max(1, min(TILE // self.block_l,
                                      triton.next_power_of_2(c)))
        c_blocks = triton.cdiv(c, self.block_c)
        tiles = triton.cdiv(length, self.block_l)
        wanted = max(1, _programs(x.device) // max(1, n * c_blocks))
        per_split = triton.cdiv(tiles, min(tiles, wanted))
        self.chunk = per_split * self.block_l
        self.splits = triton.cdiv(length, self.chunk)
        self.grid = (n, c_blocks, self.splits)
        self.apply_grid = (n, c_blocks, tiles)

    def strides(self, t: Tensor) -> Tuple[int, int, int]:
        """(n, c, l) strides of ``t``, a tensor of ``x``'s shape, viewed
        as this plan's (N, C, L)."""
        if t.is_contiguous():
            return (self.c * self.length, self.length, 1)
        return (self.c * self.length, 1, self.c)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _programs(device: torch.device) -> int:
    if device.type == 'cuda':
        return PROGRAMS_PER_SM * _sm_count(device.index or 0)
    return 8  # interpreter: a few splits, to exercise the merge


def _bits(value: float) -> int:
    """A float64's bit pattern, for the kernels' exact scalars."""
    return struct.unpack('<q', struct.pack('<d', value))[0]


def _block(n: int, cap: int) -> int:
    return max(1, min(triton.next_power_of_2(n), cap))


def _forward(x: Tensor, call: BCNCall, lerp_weight: float,
             cumulative: bool):
    """y, the new running statistics, and what the backward pass needs:
    float64 statistics and, in the compute dtype, the rounded means and
    the output's coefficients."""
    from . import triton_kernels as kernels
    plan = _Plan(x)
    n, c, length, g = plan.n, plan.c, plan.length, call.num_groups
    k = c // g
    f64 = dict(dtype=torch.float64, device=x.device)
    stats = torch.empty(saved_stats.total(n, c, g), **f64)
    v = saved_stats.split(stats, n, c, g)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = torch.empty(3 * n * c, dtype=compute, device=x.device)
    centre, coef, offset = rows.view(3, n * c)
    partial_mean = torch.empty(n * c * plan.splits, **f64)
    partial_m2 = torch.empty_like(partial_mean)
    sn, sc, sl = plan.strides(x)
    kernels.partial_moments[plan.grid](
        x, partial_mean, partial_m2, c, length, plan.splits, plan.chunk, sn,
        sc, sl, X64=compute == torch.float64, BLOCK_C=plan.block_c,
        BLOCK_L=plan.block_l)
    new_mean = torch.empty_like(call.running_mean)
    new_var = torch.empty_like(call.running_var)
    count = n * length
    given = torch.empty(2 * c, **f64)

    def launch(phase):
        kernels.coefficients[(g, )](
            partial_mean, partial_m2, call.running_mean, call.running_var,
            call.num_batches_tracked, call.batch_weight, call.batch_bias,
            call.weight, call.bias, new_mean, new_var, v['mean'], v['var'],
            v['dev'], v['a'], v['inv_std'], v['batch_mean'], v['r'], v['s'],
            centre, coef, offset, given, n, c, g, length, plan.splits,
            plan.chunk, _bits(call.eps), _bits(lerp_weight),
            _bits(count / max(1, count - 1)),
            MODE=MODE_CODES[call.mode], CUMULATIVE=cumulative, PHASE=phase,
            BLOCK_N=_block(n, max(1, 1024 // k)), BLOCK_K=_block(k, 1024))

    if call.synchronized:  # Algorithm 1 on the batch of all processes
        launch(1)
        _combine_across_processes(given, count, compute, call)
        launch(2)
    else:
        launch(0)
    y = torch.empty_like(x)
    kernels.affine_rows[plan.apply_grid](
        x, x, y, coef, centre, coef, offset, c, length, sn, sc, sl, sn, sc,
        sl, HAS_DY=False, BLOCK_C=plan.block_c, BLOCK_L=plan.block_l)
    return y, new_mean, new_var, (stats, rows)


def _combine_across_processes(given: Tensor, count: int,
                              dtype: torch.dtype, call: BCNCall) -> None:
    """Replace this process's per-channel batch mean and mean square (the
    two halves of ``given``) by the element-count-weighted means over all
    processes: the same collective as the python backend's, in the same
    dtype, so processes on either backend (an empty batch takes the python
    one) combine."""
    c = given.numel() // 2
    total, mean, square = all_reduce_means(
        torch.full((), float(count), dtype=dtype, device=given.device),
        given[:c].to(dtype), given[c:].to(dtype),
        group=call.process_group)
    given.copy_(torch.cat([mean, square]))


def _backward(dy: Tensor, x: Tensor, saved, groups: int, mode: int,
              need_dx: bool):
    from . import triton_kernels as kernels
    stats, rows = saved
    plan = _Plan(x)
    n, c, length, g = plan.n, plan.c, plan.length, groups
    k = c // g
    layout = (torch.contiguous_format if x.is_contiguous() else
              torch.channels_last)
    if not dy.is_contiguous(memory_format=layout):
        dy = dy.contiguous(memory_format=layout)
    v = saved_stats.split(stats, n, c, g)
    centre, coef, _ = rows.view(3, n * c)
    f64 = dict(dtype=torch.float64, device=x.device)
    partial_dy = torch.empty(n * c * plan.splits, **f64)
    partial_dyx = torch.empty_like(partial_dy)
    sn, sc, sl = plan.strides(x)
    dn, dc, dl = plan.strides(dy)
    kernels.partial_sums[plan.grid](
        x, dy, centre, partial_dy, partial_dyx, c, length, plan.splits,
        plan.chunk, sn, sc, sl, dn, dc, dl, BLOCK_C=plan.block_c,
        BLOCK_L=plan.block_l)
    grads = torch.empty(2 * c + 2 * g + 2 * n * c, **f64)
    d_bw, d_bb, d_w, d_b, d_row_mean, d_row_var = grads.split(
        [c, c, g, g, n * c, n * c])
    slope, offset = torch.empty(2, n * c, dtype=rows.dtype, device=x.device)
    kernels.backward_coefficients[(g, )](
        partial_dy, partial_dyx, v['mean'], v['var'], v['dev'], v['a'],
        v['inv_std'], v['batch_mean'], v['r'], v['s'], centre, d_bw, d_bb,
        d_w, d_b, d_row_mean, d_row_var, slope, offset, n, c, g, length,
        plan.splits, MODE=mode, BLOCK_N=_block(n, max(1, 1024 // k)),
        BLOCK_K=_block(k, 1024))
    dx = None
    if need_dx:
        dx = torch.empty_like(x)
        kernels.affine_rows[plan.apply_grid](
            x, dy, dx, slope, centre, coef, offset, c, length, sn, sc, sl,
            dn, dc, dl, HAS_DY=True, BLOCK_C=plan.block_c,
            BLOCK_L=plan.block_l)
    return dx, d_bw, d_bb, d_w, d_b


class TritonBCN(torch.autograd.Function):
    """Autograd of the Triton forward: x and the O(N*C) statistics saved,
    gradients by :func:`_backward`; a second derivative is refused."""

    @staticmethod
    def forward(ctx, x, call, lerp_weight, cumulative, *params):
        y, new_mean, new_var, saved = _forward(x, call, lerp_weight,
                                               cumulative)
        ctx.saved = saved
        ctx.groups, ctx.mode = call.num_groups, MODE_CODES[call.mode]
        ctx.dtypes = [p.dtype for p in params]
        ctx.save_for_backward(x)
        ctx.mark_non_differentiable(new_mean, new_var)
        return y, new_mean, new_var

    @staticmethod
    def backward(ctx, dy, *_):
        if torch.is_grad_enabled():
            # create_graph=True: kernels' gradients have no graph, and a
            # second derivative through them would be silently wrong.
            raise RuntimeError(
                "BCN backend 'triton' has no second derivative (a gradient "
                'of the gradient, create_graph=True): run BCN on the '
                "'python' backend for it (MMBCN_BACKEND=python or "
                "mmbcn.ops.set_backend('python')), whose backward pass is "
                'differentiable')
        (x, ) = ctx.saved_tensors
        dx, *grads = _backward(dy, x, ctx.saved, ctx.groups, ctx.mode,
                               ctx.needs_input_grad[0])
        grads = [g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)]
        return (dx, None, None, None, *grads)


#: Not in ``auto`` (no priority) until a GPU run has measured it faster
#: than the python backend and exact there (docs/performance.md).
BACKEND = Backend('triton', forward, devices={'cpu', 'cuda'},
                  layouts={'contiguous', 'channels_last'},
                  unavailable=unavailable, refuse=refuse)
