# Copyright (c) mmbcn contributors. All rights reserved.
"""Triton kernels of BCN (the ``triton`` backend, :mod:`.triton_backend`).

Equation numbers refer to Qiao et al., "Rethinking Normalization and
Elimination Singularity in Neural Networks" (Sec. 3). ``x`` is read as
(N, C, L) with strides, so NCHW-contiguous and channels_last tensors are
served alike. Full-size arithmetic runs in float32 (float64 for float64
input: ``X64``); everything per (sample, channel), per channel and per
group runs in float64, as in the CPU kernel (csrc/bcn_cpu.cpp): O(N*C)
numbers, so it costs nothing, and a large mean with a small spread loses
nothing to cancellation.

Forward, three launches:

1. :func:`partial_moments`: programs over (sample, channel block, split of
   L). Each tile's mean and M2 come from two passes over the tile in
   registers (the second about the first's mean, corrected); tiles and
   then splits merge by Chan's parallel formula. Splitting L lets a batch
   of one image fill the GPU.
2. :func:`coefficients`: one program per channel group merges the splits
   in a fixed order (deterministic, no atomics), takes the batch step's
   statistics by mode (Eq. 13, or Algorithm 1 lines 1-4, writing the new
   running statistics), then the group step (Eq. 15). It writes
   ``y = A[n, c] * (x - m[n, c]) + B[n, c]``'s coefficients, with ``m``
   the mean rounded to the compute dtype and ``B`` corrected for the
   rounding, and the O(N*C) statistics the backward pass needs.
3. :func:`affine_rows`: ``y`` elementwise.

Backward, three launches: :func:`partial_sums` (sums of dy and
dy * (x - m) per split), :func:`backward_coefficients` (the chain rule
through the O(N*C) part, per group: the formulas of csrc/bcn_cpu.cpp's
backward_groups), :func:`affine_rows` (``dx``).
"""
import triton
import triton.language as tl

from .call import MODE_CODES

# The codes of the ``MODE`` argument (mmbcn/ops/call.py's table).
FIXED = tl.constexpr(MODE_CODES['fixed'])
BATCH = tl.constexpr(MODE_CODES['batch'])


@triton.jit
def _real(bits):
    """A float64 passed as its bit pattern (Triton would pass a Python
    float as float32)."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def partial_moments(x_ptr, pmean_ptr, pm2_ptr, C, L, S, chunk, s_n, s_c,
                    s_l, X64: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_L: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(2)
    c_ok = cs < C
    start = split * chunk
    end = tl.minimum(start + chunk, L)
    count = tl.zeros([BLOCK_C], dtype=tl.float64)
    mean = tl.zeros([BLOCK_C], dtype=tl.float64)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float64)
    base = x_ptr + n * s_n + cs[:, None].to(tl.int64) * s_c
    for l0 in range(start, end, BLOCK_L):
        ls = l0 + tl.arange(0, BLOCK_L)
        mask = c_ok[:, None] & (ls < end)[None, :]
        x = tl.load(base + ls[None, :].to(tl.int64) * s_l, mask=mask,
                    other=0.0)
        if X64:
            x = x.to(tl.float64)
        else:
            x = x.to(tl.float32)
        k = tl.minimum(end - l0, BLOCK_L)
        rough = tl.sum(x, axis=1) / k
        d = tl.where(mask, x - rough[:, None], 0.0)
        correction = tl.sum(d, axis=1).to(tl.float64)
        kf = k.to(tl.float64)
        tile_mean = rough.to(tl.float64) + correction / kf
        tile_m2 = (tl.sum(d * d, axis=1).to(tl.float64) -
                   correction * correction / kf)
        total = count + kf
        delta = tile_mean - mean
        mean += delta * (kf / total)
        m2 += tile_m2 + delta * delta * (count * kf / total)
        count = total
    out = (n * C + cs) * S + split
    tl.store(pmean_ptr + out, mean, mask=c_ok)
    tl.store(pm2_ptr + out, m2, mask=c_ok)


@triton.jit
def _merged_moments(pmean_ptr, pm2_ptr, rows, mask, L, S, chunk,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per-(n, c) mean and biased variance from the split partials, merged
    in split order; an overflowing row gets NaN (as nn.GroupNorm)."""
    acc_t = pmean_ptr.dtype.element_ty
    count = tl.zeros([BLOCK_N, BLOCK_K], dtype=acc_t)
    mean = tl.zeros([BLOCK_N, BLOCK_K], dtype=acc_t)
    m2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=acc_t)
    for split in range(0, S):
        k = tl.minimum(chunk, L - split * chunk).to(acc_t)
        part_mean = tl.load(pmean_ptr + rows * S + split, mask=mask,
                            other=0.0)
        part_m2 = tl.load(pm2_ptr + rows * S + split, mask=mask, other=0.0)
        total = count + k
        delta = part_mean - mean
        mean += delta * (k / total)
        m2 += part_m2 + delta * delta * (count * k / total)
        count = total
    var = m2 / L
    var = tl.where(var < float('inf'), var, float('nan'))
    return mean, var


@triton.jit
def coefficients(pmean_ptr, pm2_ptr, rm_ptr, rv_ptr, nbt_ptr, bw_ptr,
                 bb_ptr, gw_ptr, gb_ptr, new_rm_ptr, new_rv_ptr, mean_ptr,
                 var_ptr, dev_ptr, a_ptr, inv_std_ptr, mu_ptr, r_ptr, s_ptr,
                 centre_ptr, coef_ptr, offset_ptr, given_ptr, N, C, G, L, S,
                 chunk, eps_bits, lerp_weight_bits, unbias_bits,
                 MODE: tl.constexpr, CUMULATIVE: tl.constexpr,
                 PHASE: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    """PHASE 0: everything from this process's batch. Synchronized
    estimates run PHASE 1 (per-(n, c) moments, and per channel this
    batch's mean and mean square about the old estimate into given_ptr),
    then, once the caller has combined given_ptr across processes,
    PHASE 2 (the rest, from the combined statistics)."""
    g = tl.program_id(0)
    K = C // G
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < K
    cs = g * K + ks
    # Per-(n, c) moments of x; per channel, the sum of the means.
    sum_mean = tl.zeros([BLOCK_K], dtype=tl.float64)
    if PHASE != 2:
        for n0 in range(0, N, BLOCK_N):
            ns = n0 + tl.arange(0, BLOCK_N)
            mask = (ns < N)[:, None] & k_ok[None, :]
            rows = ns[:, None].to(tl.int64) * C + cs[None, :]
            mean, var = _merged_moments(pmean_ptr, pm2_ptr, rows, mask, L,
                                        S, chunk, BLOCK_N, BLOCK_K)
            tl.store(mean_ptr + rows, mean, mask=mask)
            tl.store(var_ptr + rows, var, mask=mask)
            sum_mean += tl.sum(tl.where(mask, mean, 0.0), axis=0)
        tl.debug_barrier()
    running_mean = tl.load(rm_ptr + cs, mask=k_ok,
                           other=0.0).to(tl.float64)
    running_var = tl.load(rv_ptr + cs, mask=k_ok, other=1.0).to(tl.float64)
    if MODE == FIXED:  # the statistics as they are (evaluation)
        mu = running_mean
        sigma2 = running_var
    else:
        if PHASE == 2:
            batch_mean = tl.load(given_ptr + cs, mask=k_ok, other=0.0)
            sq = tl.load(given_ptr + C + cs, mask=k_ok, other=0.0)
        else:
            # Eq. 13 / Algorithm 1 line 1: the mean over (N, *).
            batch_mean = sum_mean / N
            # Mean square about the batch mean (Eq. 13) or about the *old*
            # estimate (Algorithm 1, line 2):
            # E[(x - m)^2] = var + (mean - m)^2.
            if MODE == BATCH:
                centre = batch_mean
            else:
                centre = running_mean
            sq = tl.zeros([BLOCK_K], dtype=tl.float64)
            for n0 in range(0, N, BLOCK_N):
                ns = n0 + tl.arange(0, BLOCK_N)
                mask = (ns < N)[:, None] & k_ok[None, :]
                rows = ns[:, None].to(tl.int64) * C + cs[None, :]
                mean = tl.load(mean_ptr + rows, mask=mask, other=0.0)
                var = tl.load(var_ptr + rows, mask=mask, other=0.0)
                d = mean - centre[None, :]
                sq += tl.sum(tl.where(mask, var + d * d, 0.0), axis=0)
            sq = sq / N
        if PHASE == 1:
            tl.store(given_ptr + cs, batch_mean, mask=k_ok)
            tl.store(given_ptr + C + cs, sq, mask=k_ok)
        if CUMULATIVE:  # BatchNorm's momentum=None
            lerp_weight = 1.0 / tl.load(nbt_ptr).to(tl.float64)
        else:
            lerp_weight = _real(lerp_weight_bits)
        if MODE == BATCH:
            # Eq. 14's running averages (unbiased variance), as BatchNorm.
            new_mean = running_mean + lerp_weight * (batch_mean - running_mean)
            new_var = running_var + lerp_weight * (
                sq * _real(unbias_bits) - running_var)
            mu = batch_mean
            sigma2 = sq
        else:
            # Algorithm 1 lines 3-4; line 5 normalizes with the new ones.
            new_mean = running_mean + lerp_weight * (batch_mean - running_mean)
            new_var = running_var + lerp_weight * (sq - running_var)
            mu = new_mean
            sigma2 = new_var
        if PHASE != 1:
            tl.store(new_rm_ptr + cs,
                     new_mean.to(new_rm_ptr.dtype.element_ty), mask=k_ok)
            tl.store(new_rv_ptr + cs,
                     new_var.to(new_rv_ptr.dtype.element_ty), mask=k_ok)
    if PHASE != 1:
        _group_step(bw_ptr, bb_ptr, gw_ptr, gb_ptr, mean_ptr, var_ptr,
                    dev_ptr, a_ptr, inv_std_ptr, mu_ptr, r_ptr, s_ptr,
                    centre_ptr, coef_ptr, offset_ptr, mu, sigma2, g, cs,
                    k_ok, N, C, G, K, _real(eps_bits), BLOCK_N, BLOCK_K)


@triton.jit
def _group_step(bw_ptr, bb_ptr, gw_ptr, gb_ptr, mean_ptr, var_ptr, dev_ptr,
                a_ptr, inv_std_ptr, mu_ptr, r_ptr, s_ptr, centre_ptr,
                coef_ptr, offset_ptr, mu, sigma2, g, cs, k_ok, N, C, G, K,
                eps, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The batch step's affine (Eq. 13) from its statistics mu, sigma2,
    then the group step (Eq. 15) and the output's coefficients."""
    # Eq. 13: x_dot = a_c * (x - mu_hat_c) + beta^b_c.
    inv_std = 1.0 / tl.sqrt(sigma2 + eps)
    a = tl.load(bw_ptr + cs, mask=k_ok, other=0.0).to(tl.float64) * inv_std
    beta_b = tl.load(bb_ptr + cs, mask=k_ok, other=0.0).to(tl.float64)
    tl.store(a_ptr + cs, a, mask=k_ok)
    tl.store(inv_std_ptr + cs, inv_std, mask=k_ok)
    tl.store(mu_ptr + cs, mu, mask=k_ok)
    gamma_c = tl.load(gw_ptr + g).to(tl.float64)
    beta_c = tl.load(gb_ptr + g).to(tl.float64)
    # Eq. 15 on x_dot from its per-(n, c) moments a*(mean - mu) + beta^b
    # and a^2 * var: y = s * (a * (x - mean) + dev) + beta^c_g.
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        n_ok = ns < N
        mask = n_ok[:, None] & k_ok[None, :]
        rows = ns[:, None].to(tl.int64) * C + cs[None, :]
        mean = tl.load(mean_ptr + rows, mask=mask, other=0.0)
        var = tl.load(var_ptr + rows, mask=mask, other=0.0)
        dev = a[None, :] * (mean - mu[None, :]) + beta_b[None, :]
        group_mean = tl.sum(tl.where(mask, dev, 0.0), axis=1) / K
        dev = tl.where(mask, dev - group_mean[:, None], 0.0)
        group_var = tl.sum(a[None, :] * a[None, :] * var + dev * dev,
                           axis=1) / K
        r = 1.0 / tl.sqrt(group_var + eps)
        s = gamma_c * r
        # Applied as A * (x - m_T) + B with m_T the mean rounded to the
        # compute dtype: B = s * (a * (m_T - mean) + dev) + beta^c_g.
        centre = mean.to(centre_ptr.dtype.element_ty)
        rounding = centre.to(tl.float64) - mean
        tl.store(dev_ptr + rows, dev, mask=mask)
        tl.store(centre_ptr + rows, centre, mask=mask)
        tl.store(coef_ptr + rows, s[:, None] * a[None, :], mask=mask)
        tl.store(offset_ptr + rows,
                 s[:, None] * (a[None, :] * rounding + dev) + beta_c,
                 mask=mask)
        tl.store(r_ptr + ns * G + g, r, mask=n_ok)
        tl.store(s_ptr + ns * G + g, s, mask=n_ok)


@triton.jit
def affine_rows(x_ptr, dy_ptr, out_ptr, coef_x_ptr, centre_ptr, coef_dy_ptr,
                offset_ptr, C, L, s_n, s_c, s_l, d_n, d_c, d_l,
                HAS_DY: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_L: tl.constexpr):
    """out = coef_x[n, c] * (x - centre[n, c]) (+ coef_dy[n, c] * dy)
    + offset[n, c]; ``out`` has ``x``'s strides."""
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ls = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    acc_t = coef_x_ptr.dtype.element_ty
    c_ok = cs < C
    mask = c_ok[:, None] & (ls < L)[None, :]
    rows = n * C + cs
    coef_x = tl.load(coef_x_ptr + rows, mask=c_ok, other=0.0)
    centre = tl.load(centre_ptr + rows, mask=c_ok, other=0.0)
    offset = tl.load(offset_ptr + rows, mask=c_ok, other=0.0)
    at = (n * s_n + cs[:, None].to(tl.int64) * s_c
          + ls[None, :].to(tl.int64) * s_l)
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(acc_t)
    out = coef_x[:, None] * (x - centre[:, None]) + offset[:, None]
    if HAS_DY:
        coef_dy = tl.load(coef_dy_ptr + rows, mask=c_ok, other=0.0)
        dat = (n * d_n + cs[:, None].to(tl.int64) * d_c
               + ls[None, :].to(tl.int64) * d_l)
        dy = tl.load(dy_ptr + dat, mask=mask, other=0.0).to(acc_t)
        out += coef_dy[:, None] * dy
    tl.store(out_ptr + at, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def partial_sums(x_ptr, dy_ptr, centre_ptr, pdy_ptr, pdyx_ptr, C, L, S,
                 chunk, s_n, s_c, s_l, d_n, d_c, d_l, BLOCK_C: tl.constexpr,
                 BLOCK_L: tl.constexpr):
    """Per (n, c, split): sum of dy and of dy * (x - m_T[n, c])."""
    n = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(2)
    cmp_t = centre_ptr.dtype.element_ty
    c_ok = cs < C
    centre = tl.load(centre_ptr + n * C + cs, mask=c_ok, other=0.0)
    start = split * chunk
    end = tl.minimum(start + chunk, L)
    sum_dy = tl.zeros([BLOCK_C], dtype=tl.float64)
    sum_dyx = tl.zeros([BLOCK_C], dtype=tl.float64)
    x_base = x_ptr + n * s_n + cs[:, None].to(tl.int64) * s_c
    dy_base = dy_ptr + n * d_n + cs[:, None].to(tl.int64) * d_c
    for l0 in range(start, end, BLOCK_L):
        ls = (l0 + tl.arange(0, BLOCK_L))[None, :]
        mask = c_ok[:, None] & (ls < end)
        x = tl.load(x_base + ls.to(tl.int64) * s_l, mask=mask,
                    other=0.0).to(cmp_t)
        dy = tl.load(dy_base + ls.to(tl.int64) * d_l, mask=mask,
                     other=0.0).to(cmp_t)
        sum_dy += tl.sum(dy, axis=1).to(tl.float64)
        sum_dyx += tl.sum(tl.where(mask, dy * (x - centre[:, None]), 0.0),
                          axis=1).to(tl.float64)
    out = (n * C + cs) * S + split
    tl.store(pdy_ptr + out, sum_dy, mask=c_ok)
    tl.store(pdyx_ptr + out, sum_dyx, mask=c_ok)


@triton.jit
def backward_coefficients(pdy_ptr, pdyx_ptr, mean_ptr, var_ptr, dev_ptr,
                          a_ptr, inv_std_ptr, mu_ptr, r_ptr, s_ptr,
                          centre_ptr, d_bw_ptr, d_bb_ptr, d_w_ptr, d_b_ptr,
                          d_row_mean_ptr, d_row_var_ptr, slope_ptr,
                          offset_ptr, N, C, G, L, S, MODE: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The chain rule through the O(N*C) part for group g, in float64 (the
    formulas of csrc/bcn_cpu.cpp, backward_groups): the affine gradients,
    and dx's per-(n, c) coefficients,
    dx = A * dy + slope * (x - m_T) + offset."""
    g = tl.program_id(0)
    K = C // G
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < K
    cs = g * K + ks
    a = tl.load(a_ptr + cs, mask=k_ok, other=0.0)
    mu = tl.load(mu_ptr + cs, mask=k_ok, other=0.0)
    inv_std = tl.load(inv_std_ptr + cs, mask=k_ok, other=0.0)
    da = tl.zeros([BLOCK_K], dtype=tl.float64)
    db = tl.zeros([BLOCK_K], dtype=tl.float64)
    d_weight = tl.zeros([BLOCK_N], dtype=tl.float64)
    d_bias = tl.zeros([BLOCK_N], dtype=tl.float64)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        n_ok = ns < N
        mask = n_ok[:, None] & k_ok[None, :]
        rows = ns[:, None].to(tl.int64) * C + cs[None, :]
        # P = sum dy * (x - m_T), T = sum dy over each (n, c).
        p = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float64)
        t = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float64)
        for split in range(0, S):
            p += tl.load(pdyx_ptr + rows * S + split, mask=mask, other=0.0)
            t += tl.load(pdy_ptr + rows * S + split, mask=mask, other=0.0)
        mean = tl.load(mean_ptr + rows, mask=mask, other=0.0)
        var = tl.load(var_ptr + rows, mask=mask, other=0.0)
        dev = tl.load(dev_ptr + rows, mask=mask, other=0.0)
        rounded = tl.load(centre_ptr + rows, mask=mask,
                          other=0.0).to(tl.float64)
        r = tl.load(r_ptr + ns * G + g, mask=n_ok, other=0.0)
        s = tl.load(s_ptr + ns * G + g, mask=n_ok, other=0.0)
        ds = tl.sum(a[None, :] * p +
                    (a[None, :] * (rounded - mean) + dev) * t, axis=1)
        sum_t = tl.sum(t, axis=1)
        d_bias += sum_t
        d_weight += ds * r
        dgv = -0.5 * ds * s * r * r
        dgm = -s * sum_t
        # Gradients of x_dot's per-(n, c) mean and variance.
        dmd = (dgm[:, None] + 2.0 * dgv[:, None] * dev) / K
        dvd = dgv[:, None] / K
        da += tl.sum(tl.where(mask, s[:, None] * p +
                              s[:, None] * (rounded - mu[None, :]) * t +
                              dmd * (mean - mu[None, :]) +
                              2.0 * a[None, :] * var * dvd, 0.0), axis=0)
        db += tl.sum(tl.where(mask, s[:, None] * t + dmd, 0.0), axis=0)
        # ... and of x's, through the group step (Eq. 15)
        tl.store(d_row_mean_ptr + rows, a[None, :] * dmd, mask=mask)
        tl.store(d_row_var_ptr + rows, a[None, :] * a[None, :] * dvd,
                 mask=mask)
    tl.store(d_bw_ptr + cs, da * inv_std, mask=k_ok)
    tl.store(d_bb_ptr + cs, db, mask=k_ok)
    tl.store(d_w_ptr + g, tl.sum(d_weight, axis=0))
    tl.store(d_b_ptr + g, tl.sum(d_bias, axis=0))
    tl.debug_barrier()
    # 'batch' mode: the batch statistics' share, per channel.
    if MODE == BATCH:
        d_mu = -a * db / N
        d_var = -0.5 * da * a * inv_std * inv_std / N
    else:
        d_mu = tl.zeros([BLOCK_K], dtype=tl.float64)
        d_var = tl.zeros([BLOCK_K], dtype=tl.float64)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        mask = (ns < N)[:, None] & k_ok[None, :]
        rows = ns[:, None].to(tl.int64) * C + cs[None, :]
        mean = tl.load(mean_ptr + rows, mask=mask, other=0.0)
        rounded = tl.load(centre_ptr + rows, mask=mask,
                          other=0.0).to(tl.float64)
        d_row_mean = tl.load(d_row_mean_ptr + rows, mask=mask, other=0.0)
        d_row_var = tl.load(d_row_var_ptr + rows, mask=mask, other=0.0)
        # with the batch statistics' share: the whole gradient of the row's
        # mean and variance
        d_mean_total = d_row_mean + (d_mu[None, :] + 2.0 * d_var[None, :] *
                                     (mean - mu[None, :]))
        slope = 2.0 * (d_row_var + d_var[None, :]) / L
        offset = d_mean_total / L + slope * (rounded - mean)
        tl.store(slope_ptr + rows, slope, mask=mask)
        tl.store(offset_ptr + rows, offset, mask=mask)
