// Copyright (c) mmbcn contributors. All rights reserved.
//
// Batch-Channel Normalization on CPU: the `cpu` backend of
// mmbcn.ops.batch_channel_norm, registered as the operators
// mmbcn::bcn_cpu_forward (with its autograd) and mmbcn::bcn_cpu_backward
// (TORCH_LIBRARY), so tracing, meta tensors and torch.compile see it;
// mmbcn/ops/cpu_backend.py registers their shapes on meta tensors.
//
// Equation numbers refer to Qiao et al., "Rethinking Normalization and
// Elimination Singularity in Neural Networks" (Sec. 3); the reference
// formulation is mmbcn/ops/moment_affine.py. This file computes the same
// numbers in four full-size passes, as nn.GroupNorm does:
//
//   forward:  per-(n, c) moments of x; y = A[n, c] * (x - m[n, c]) + C[n, c]
//   backward: per-(n, c) sums of dy and dy * (x - m);
//             dx = A * dy + p[n, c] * (x - m) + q[n, c]
//
// Everything between those passes is O(N * C) arithmetic in double. The
// moments take one pass about the row's first element, and a second about
// the mean where that one would lose precision; the output and the gradient
// are computed from x - m. A large mean and a small spread therefore lose
// nothing to cancellation. A row whose moments overflow (|x| beyond the
// square root of the dtype's largest value) gets NaN moments, so its group
// turns NaN as in nn.GroupNorm instead of a finite, wrong output.
//
// The forward operator updates the statistics buffers in place, as
// aten's native_batch_norm does (declared mutable in its schema).
// Statistics of the batch step (Eq. 13), by `mode`:
//   kFixed    - running_mean / running_var as they are (evaluation);
//   kBatch    - the batch's own, differentiable (Eq. 13-14), and the
//               running averages move by the momentum (none: the
//               cumulative average over num_batches_tracked);
//   kEstimate - Algorithm 1: the estimates move by its rate r towards the
//               batch (lines 1-4), then normalize (line 5); no gradient
//               flows into them.
// `lerp_weight` is how far the statistics move towards the batch's: the
// momentum, 1 / num_batches_tracked, or r.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// The codes of mmbcn/ops/call.py's MODE_CODES (tests/test_backends.py
// compares the two).
enum Mode : int64_t { kFixed = 0, kBatch = 1, kEstimate = 2 };

// Elements per block of a row reduction.
constexpr int64_t kBlock = 256;
// Elements per parallel task.
constexpr int64_t kGrain = 32768;

// Sums of f(i) and g(i) over [0, length): vector lanes in T within blocks
// of kBlock elements, blocks added in double.
template <typename T, typename F, typename G>
inline void pair_sums(int64_t length, F f, G g, double* sum_f,
                      double* sum_g) {
  double total_f = 0, total_g = 0;
  for (int64_t start = 0; start < length; start += kBlock) {
    const int64_t end = std::min(length, start + kBlock);
    T acc_f = 0, acc_g = 0;
#pragma omp simd reduction(+ : acc_f, acc_g)
    for (int64_t i = start; i < end; ++i) {
      acc_f += f(i);
      acc_g += g(i);
    }
    total_f += acc_f;
    total_g += acc_g;
  }
  *sum_f = total_f;
  *sum_g = total_g;
}

// Sums of x - shift and (x - shift)^2 over one row.
template <typename T>
void shifted_sums(const T* x, int64_t length, T shift, double* dev,
                  double* sq) {
  pair_sums<T>(
      length, [=](int64_t i) { return x[i] - shift; },
      [=](int64_t i) { return (x[i] - shift) * (x[i] - shift); }, dev, sq);
}

// Mean and biased variance of one row, in one pass about the row's first
// element: sum (x - s)^2 = sum (x - mean)^2 + L (mean - s)^2. When the
// second term dominates (the first element lies far out), the sum about s
// has lost precision to cancellation, and a second pass about the mean
// found by the first gives the variance.
template <typename T>
void row_moments(const T* x, int64_t length, double inv_length, double* mean,
                 double* var) {
  T shift = x[0];
  double dev, sq;
  shifted_sums(x, length, shift, &dev, &sq);
  double offset = dev * inv_length;
  double spread = sq - dev * offset;
  if (!(spread * 16 >= sq)) {
    shift = static_cast<T>(shift + offset);
    shifted_sums(x, length, shift, &dev, &sq);
    offset = dev * inv_length;
    spread = sq - dev * offset;
  }
  *mean = static_cast<double>(shift) + offset;
  *var = std::max(0.0, spread * inv_length);
  if (!std::isfinite(spread)) {
    // Overflow: propagate it as NaN, as nn.GroupNorm's E[x^2] - E[x]^2 does.
    *mean = *var = std::numeric_limits<double>::quiet_NaN();
  }
}

// Sums of dy * (x - shift) and of dy over one row.
template <typename T>
void row_sums(const T* dy, const T* x, T shift, int64_t length, double* dot,
              double* total) {
  pair_sums<T>(
      length, [=](int64_t i) { return dy[i] * (x[i] - shift); },
      [=](int64_t i) { return dy[i]; }, dot, total);
}

// y = scale * (x - centre) + offset over one row.
template <typename T>
void row_affine(const T* x, T centre, T scale, T offset, int64_t length,
                T* out) {
#pragma omp simd
  for (int64_t i = 0; i < length; ++i) out[i] = scale * (x[i] - centre) + offset;
}

// dx = scale * dy + slope * (x - centre) + offset over one row.
template <typename T>
void row_grad(const T* dy, const T* x, T centre, T scale, T slope, T offset,
              int64_t length, T* out) {
#pragma omp simd
  for (int64_t i = 0; i < length; ++i)
    out[i] = scale * dy[i] + slope * (x[i] - centre) + offset;
}

// O(N*C) quantities the forward pass computes and the backward pass reuses,
// in one double tensor laid out as mmbcn/ops/saved_stats.py's FIELDS: per
// (n, c) mean, var, dev = (x_dot mean) - (group mean); per c a = gamma^b /
// sigma_hat, inv_std = 1 / sigma_hat, the batch mean mu_hat; per (n, g) the
// group's r = 1 / sigma and s = gamma^c * r.
struct Stats {
  double *mean, *var, *dev, *a, *inv_std, *batch_mean, *r, *s;
  Stats(const Tensor& t, int64_t n, int64_t c, int64_t g) {
    double* p = t.data_ptr<double>();
    mean = p;
    var = mean + n * c;
    dev = var + n * c;
    a = dev + n * c;
    inv_std = a + c;
    batch_mean = inv_std + c;
    r = batch_mean + c;
    s = r + n * g;
  }
  static int64_t size(int64_t n, int64_t c, int64_t g) {
    return 3 * n * c + 3 * c + 2 * n * g;
  }
};

struct Shape {
  int64_t n, c, groups, k, length;
  Shape(const Tensor& x, int64_t g)
      : n(x.size(0)), c(x.size(1)), groups(g), k(c / g),
        length(x.numel() / (n * c)) {}
  // Groups per parallel task: each task owns whole channel groups, across
  // the batch, so a group's rows stay in cache between its two passes.
  int64_t group_grain() const {
    return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, n * k * length));
  }
};

// Forward pass for the channel groups [g_lo, g_hi): moments, the batch
// step's statistics (Eq. 13 or Algorithm 1, updating the buffers), the group
// step (Eq. 15) and the output rows.
template <typename T>
void forward_groups(const Shape& sh, const Stats& st, const T* xp, T* yp,
                    const T* bw, const T* bb, const T* gw, const T* gb, T* rm,
                    T* rv, int64_t mode, double lerp_weight, double unbias,
                    double eps, int64_t g_lo, int64_t g_hi) {
  const int64_t n = sh.n, c = sh.c, k = sh.k, length = sh.length;
  const double inv_length = 1.0 / length, inv_n = 1.0 / n;
  for (int64_t g = g_lo; g < g_hi; ++g) {
    const int64_t j0 = g * k;
    double* mu = st.batch_mean + j0;
    double* inv_std = st.inv_std + j0;
    double* a = st.a + j0;
    auto moments = [&](int64_t b) {
      for (int64_t j = j0; j < j0 + k; ++j) {
        const int64_t i = b * c + j;
        row_moments(xp + i * length, length, inv_length, st.mean + i,
                    st.var + i);
      }
    };
    auto batch_step = [&]() {
      // The batch step's statistics (Eq. 13): mu_hat into batch_mean, and
      // sigma_hat^2 into inv_std until it is inverted below.
      T* rm_g = rm + j0;
      T* rv_g = rv + j0;
      if (mode == kFixed) {
        for (int64_t j = 0; j < k; ++j) {
          mu[j] = rm_g[j];
          inv_std[j] = rv_g[j];
        }
      } else {
        // Eq. 13 / Algorithm 1 line 1: the mean over (N, *).
        for (int64_t j = 0; j < k; ++j) mu[j] = inv_std[j] = 0;
        for (int64_t b = 0; b < n; ++b) {
          const double* mean = st.mean + b * c + j0;
          for (int64_t j = 0; j < k; ++j) mu[j] += mean[j];
        }
        for (int64_t j = 0; j < k; ++j) mu[j] *= inv_n;
        // Mean square about the batch mean (Eq. 13) or the old estimate
        // (Algorithm 1, line 2): E[(x - m)^2] = var + (mean - m)^2.
        for (int64_t b = 0; b < n; ++b) {
          const double* mean = st.mean + b * c + j0;
          const double* var = st.var + b * c + j0;
          for (int64_t j = 0; j < k; ++j) {
            const double d =
                mean[j] - (mode == kBatch ? mu[j] : static_cast<double>(rm_g[j]));
            inv_std[j] += var[j] + d * d;
          }
        }
        for (int64_t j = 0; j < k; ++j) {
          const double sq = inv_std[j] * inv_n;
          if (mode == kBatch) {
            inv_std[j] = sq;
            rm_g[j] += static_cast<T>(lerp_weight * (mu[j] - rm_g[j]));
            rv_g[j] += static_cast<T>(lerp_weight * (sq * unbias - rv_g[j]));
          } else {
            // Lines 3-4; line 5 normalizes with the updated estimates.
            rm_g[j] += static_cast<T>(lerp_weight * (mu[j] - rm_g[j]));
            rv_g[j] += static_cast<T>(lerp_weight * (sq - rv_g[j]));
            mu[j] = rm_g[j];
            inv_std[j] = rv_g[j];
          }
        }
      }
      // Eq. 13: x_dot = a_c * (x - mu_hat_c) + beta^b_c.
      for (int64_t j = 0; j < k; ++j) {
        inv_std[j] = 1.0 / std::sqrt(inv_std[j] + eps);
        a[j] = bw[j0 + j] * inv_std[j];
      }
    };
    // Eq. 15 on x_dot, from its per-(n, c) moments a*mean + b and
    // a^2*var: y = s * (a * (x - mean) + dev) + beta^c_g, applied as
    // A * (x - m_T) + C with m_T the mean rounded to T.
    auto group_step = [&](int64_t b) {
      const int64_t base = b * c + j0;
      const double* mean = st.mean + base;
      const double* var = st.var + base;
      double* dev = st.dev + base;
      double group_mean = 0;
      for (int64_t j = 0; j < k; ++j) {
        dev[j] = a[j] * (mean[j] - mu[j]) + bb[j0 + j];
        group_mean += dev[j];
      }
      group_mean /= k;
      double group_var = 0;
      for (int64_t j = 0; j < k; ++j) {
        dev[j] -= group_mean;
        group_var += a[j] * a[j] * var[j] + dev[j] * dev[j];
      }
      const double r = 1.0 / std::sqrt(group_var / k + eps);
      const double s = gw[g] * r;
      st.r[b * sh.groups + g] = r;
      st.s[b * sh.groups + g] = s;
      for (int64_t j = 0; j < k; ++j) {
        const T rounded = static_cast<T>(mean[j]);
        const double offset =
            s * (a[j] * (rounded - mean[j]) + dev[j]) + gb[g];
        row_affine(xp + (base + j) * length, rounded,
                   static_cast<T>(s * a[j]), static_cast<T>(offset), length,
                   yp + (base + j) * length);
      }
    };
    if (mode == kFixed) {
      // Fixed statistics: one sample's rows at a time, still in cache for
      // the second pass.
      batch_step();
      for (int64_t b = 0; b < n; ++b) {
        moments(b);
        group_step(b);
      }
    } else {
      // Batch statistics need every sample's moments first; the second
      // pass runs backwards so the rows read last are reused first.
      for (int64_t b = 0; b < n; ++b) moments(b);
      batch_step();
      for (int64_t b = n - 1; b >= 0; --b) group_step(b);
    }
  }
}

template <typename T>
Tensor forward_impl(const Tensor& x, const Tensor& batch_weight,
                    const Tensor& batch_bias, const Tensor& weight,
                    const Tensor& bias, const Tensor& new_mean,
                    const Tensor& new_var, int64_t groups, double eps,
                    int64_t mode, double lerp_weight,
                    Tensor& stats_tensor) {
  const Shape sh(x, groups);
  stats_tensor = at::empty({Stats::size(sh.n, sh.c, groups)},
                           x.options().dtype(at::kDouble));
  const Stats st(stats_tensor, sh.n, sh.c, groups);
  // BatchNorm's running variance is the unbiased one.
  const double count = static_cast<double>(sh.n) * sh.length;
  const double unbias = mode == kBatch ? count / std::max(1.0, count - 1) : 1.0;
  Tensor y = at::empty_like(x);
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const T* bw = batch_weight.const_data_ptr<T>();
  const T* bb = batch_bias.const_data_ptr<T>();
  const T* gw = weight.const_data_ptr<T>();
  const T* gb = bias.const_data_ptr<T>();
  T* rm = new_mean.data_ptr<T>();
  T* rv = new_var.data_ptr<T>();
  at::parallel_for(0, groups, sh.group_grain(), [&](int64_t lo, int64_t hi) {
    forward_groups(sh, st, xp, yp, bw, bb, gw, gb, rm, rv, mode, lerp_weight,
                   unbias, eps, lo, hi);
  });
  return y;
}

template <typename T>
void backward_groups(const Shape& sh, const Stats& st, const T* xp,
                     const T* dyp, T* dxp, int64_t mode, double* da,
                     double* db, double* d_weight, double* d_bias,
                     int64_t g_lo, int64_t g_hi) {
  const int64_t n = sh.n, c = sh.c, k = sh.k, length = sh.length;
  const double inv_n = 1.0 / n, inv_k = 1.0 / k, inv_length = 1.0 / length;
  // Per (n, c) row of the group: the sums of dy * (x - m_T) and of dy,
  // then the gradients of the row's mean and variance of x through the
  // group step (Eq. 15), to which the batch step's share is added below.
  std::vector<double> sum_dy_xc(n * k), sum_dy(n * k);
  std::vector<double> d_row_mean(n * k), d_row_var(n * k);
  std::vector<double> d_mu(k), d_var(k);
  for (int64_t g = g_lo; g < g_hi; ++g) {
    const int64_t j0 = g * k;
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = b * c + j0 + j;
        row_sums(dyp + i * length, xp + i * length,
                 static_cast<T>(st.mean[i]), length, &sum_dy_xc[b * k + j],
                 &sum_dy[b * k + j]);
      }
    }
    const double* a = st.a + j0;
    const double* mu = st.batch_mean + j0;
    for (int64_t j = 0; j < k; ++j) da[j0 + j] = db[j0 + j] = 0;
    d_weight[g] = d_bias[g] = 0;
    for (int64_t b = 0; b < n; ++b) {
      const int64_t base = b * c + j0;
      const double r = st.r[b * sh.groups + g], s = st.s[b * sh.groups + g];
      const double* mean = st.mean + base;
      const double* var = st.var + base;
      const double* dev = st.dev + base;
      const double* p = sum_dy_xc.data() + b * k;
      const double* t = sum_dy.data() + b * k;
      double* d_m = d_row_mean.data() + b * k;
      double* d_v = d_row_var.data() + b * k;
      double ds = 0, sum_s = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double rounded = static_cast<T>(mean[j]);
        ds += a[j] * p[j] + (a[j] * (rounded - mean[j]) + dev[j]) * t[j];
        sum_s += t[j];
      }
      d_bias[g] += sum_s;
      d_weight[g] += ds * r;
      const double dgv = -0.5 * ds * s * r * r;
      const double dgm = -s * sum_s;
      for (int64_t j = 0; j < k; ++j) {
        const double rounded = static_cast<T>(mean[j]);
        const double dmd = (dgm + 2.0 * dgv * dev[j]) * inv_k;
        const double dvd = dgv * inv_k;
        da[j0 + j] += s * p[j] + s * (rounded - mu[j]) * t[j] +
                      dmd * (mean[j] - mu[j]) + 2.0 * a[j] * var[j] * dvd;
        db[j0 + j] += s * t[j] + dmd;
        d_m[j] = a[j] * dmd;
        d_v[j] = a[j] * a[j] * dvd;
      }
    }
    if (dxp == nullptr) continue;
    // kBatch: the batch statistics' share, per channel.
    for (int64_t j = 0; j < k; ++j) {
      d_mu[j] = d_var[j] = 0;
      if (mode == kBatch) {
        d_mu[j] = -a[j] * db[j0 + j] * inv_n;
        d_var[j] = -0.5 * da[j0 + j] * a[j] * st.inv_std[j0 + j] *
                   st.inv_std[j0 + j] * inv_n;
      }
    }
    // Backwards over the batch: the rows summed last are reused first.
    for (int64_t b = n - 1; b >= 0; --b) {
      const double s = st.s[b * sh.groups + g];
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = b * c + j0 + j;
        const double d_mean_total = d_row_mean[b * k + j] + d_mu[j] +
                                    2.0 * d_var[j] * (st.mean[i] - mu[j]);
        const double slope =
            2.0 * (d_row_var[b * k + j] + d_var[j]) * inv_length;
        const T rounded = static_cast<T>(st.mean[i]);
        const double offset =
            d_mean_total * inv_length + slope * (rounded - st.mean[i]);
        row_grad(dyp + i * length, xp + i * length, rounded,
                 static_cast<T>(s * a[j]), static_cast<T>(slope),
                 static_cast<T>(offset), length, dxp + i * length);
      }
    }
  }
}

// Gradients of x, batch_weight, batch_bias, weight, bias (undefined where
// not wanted).
// Gradients of x, batch_weight, batch_bias, weight, bias (undefined where
// output_mask is false).
template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_impl(
    const Tensor& dy_in, const Tensor& x, const Tensor& stats_tensor,
    int64_t groups, int64_t mode, std::array<bool, 5> output_mask) {
  const Tensor dy = dy_in.contiguous();
  const Shape sh(x, groups);
  const Stats st(stats_tensor, sh.n, sh.c, groups);
  std::vector<double> da(sh.c), db(sh.c), d_weight(groups), d_bias(groups);
  Tensor dx;
  if (output_mask[0]) dx = at::empty_like(x);
  const T* xp = x.const_data_ptr<T>();
  const T* dyp = dy.const_data_ptr<T>();
  T* dxp = output_mask[0] ? dx.data_ptr<T>() : nullptr;
  at::parallel_for(0, groups, sh.group_grain(), [&](int64_t lo, int64_t hi) {
    backward_groups(sh, st, xp, dyp, dxp, mode, da.data(), db.data(),
                    d_weight.data(), d_bias.data(), lo, hi);
  });
  auto to_tensor = [&](const std::vector<double>& values) {
    Tensor t = at::empty({static_cast<int64_t>(values.size())}, x.options());
    T* p = t.data_ptr<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<T>(values[i]);
    return t;
  };
  Tensor d_bw, d_bb, d_w, d_b;
  if (output_mask[1]) {
    for (int64_t j = 0; j < sh.c; ++j) da[j] *= st.inv_std[j];
    d_bw = to_tensor(da);
  }
  if (output_mask[2]) d_bb = to_tensor(db);
  if (output_mask[3]) d_w = to_tensor(d_weight);
  if (output_mask[4]) d_b = to_tensor(d_bias);
  return {dx, d_bw, d_bb, d_w, d_b};
}

void check_inputs(const Tensor& x, const Tensor& batch_weight,
                  const Tensor& batch_bias, const Tensor& weight,
                  const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, int64_t groups, int64_t mode) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() >= 3 &&
                  x.numel() > 0,
              "bcn_cpu: x must be a non-empty contiguous CPU tensor (N, C, *), "
              "got ", x.sizes());
  const int64_t c = x.size(1);
  TORCH_CHECK(groups > 0 && c % groups == 0, "bcn_cpu: groups=", groups,
              " must divide C=", c);
  TORCH_CHECK(mode == kFixed || mode == kBatch || mode == kEstimate,
              "bcn_cpu: unknown mode ", mode);
  for (const Tensor* t : {&batch_weight, &batch_bias, &running_mean,
                          &running_var}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->numel() == c &&
                    t->is_contiguous() && t->device().is_cpu(),
                "bcn_cpu: per-channel tensors must be contiguous CPU ",
                x.scalar_type(), " of ", c, " elements");
  }
  for (const Tensor* t : {&weight, &bias}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() &&
                    t->numel() == groups && t->is_contiguous() &&
                    t->device().is_cpu(),
                "bcn_cpu: per-group tensors must be contiguous CPU ",
                x.scalar_type(), " of ", groups, " elements");
  }
}

// y, and the O(N*C) statistics the backward pass needs (double); the
// buffers are updated in place.
std::tuple<Tensor, Tensor> bcn_cpu_forward(
    const Tensor& x, const Tensor& batch_weight, const Tensor& batch_bias,
    const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
    const Tensor& running_var, const Tensor& num_batches_tracked,
    int64_t groups, double eps, int64_t mode,
    const std::optional<Tensor>& rate) {
  check_inputs(x, batch_weight, batch_bias, weight, bias, running_mean,
               running_var, groups, mode);
  TORCH_CHECK(num_batches_tracked.scalar_type() == at::kLong &&
                  num_batches_tracked.numel() == 1,
              "bcn_cpu: num_batches_tracked must be one int64");
  // The weight of this batch in the running averages' update: `rate`, or
  // 1 / num_batches_tracked for the cumulative average (rate none).
  // A 0-dim tensor rather than a float, so that a rate that changes every
  // iteration (Algorithm 1's r follows the learning rate) is a graph input
  // under torch.compile, not a constant recompiled for.
  const bool has_rate = rate.has_value() && rate->defined();
  TORCH_CHECK(!has_rate || (rate->numel() == 1 && rate->device().is_cpu()),
              "bcn_cpu: rate must be one number on the CPU");
  double lerp_weight = has_rate ? rate->item<double>() : 0.0;
  if (mode == kBatch) {
    int64_t* tracked = num_batches_tracked.data_ptr<int64_t>();
    *tracked += 1;
    if (!has_rate) lerp_weight = 1.0 / *tracked;
  }
  Tensor stats, y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bcn_cpu_forward", [&] {
    y = forward_impl<scalar_t>(x, batch_weight, batch_bias, weight, bias,
                               running_mean, running_var, groups, eps, mode,
                               lerp_weight, stats);
  });
  return {y, stats};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> bcn_cpu_backward(
    const Tensor& dy, const Tensor& x, const Tensor& stats, int64_t groups,
    int64_t mode, std::array<bool, 5> output_mask) {
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "bcn_cpu_backward: dy ", dy.sizes(), " must match x ",
              x.sizes());
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bcn_cpu_backward", [&] {
    grads = backward_impl<scalar_t>(dy, x, stats, groups, mode, output_mask);
  });
  return grads;
}

// Autograd of bcn_cpu_forward, in C++ so that a training step pays no
// Python between the dispatcher and the kernels. Both operators are
// called through the dispatcher below autograd, so tracers and
// torch.compile see them.
class BCNCpuFunction : public torch::autograd::Function<BCNCpuFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const Tensor& x,
      const Tensor& batch_weight, const Tensor& batch_bias,
      const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
      const Tensor& running_var, const Tensor& num_batches_tracked,
      int64_t groups, double eps, int64_t mode,
    const std::optional<Tensor>& rate) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mmbcn::bcn_cpu_forward", "")
                         .typed<decltype(bcn_cpu_forward)>();
    Tensor y, stats;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(y, stats) =
          op.call(x, batch_weight, batch_bias, weight, bias, running_mean,
                  running_var, num_batches_tracked, groups, eps, mode, rate);
    }
    if (mode != kFixed) {
      for (const Tensor* t :
           {&running_mean, &running_var, &num_batches_tracked}) {
        torch::autograd::increment_version(*t);
      }
    }
    ctx->save_for_backward({x});
    ctx->saved_data["stats"] = stats;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["mode"] = mode;
    ctx->mark_non_differentiable({stats});
    return {y, stats};
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_outputs) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mmbcn::bcn_cpu_backward", "")
                         .typed<decltype(bcn_cpu_backward)>();
    const auto saved = ctx->get_saved_variables();
    std::array<bool, 5> mask;
    for (int i = 0; i < 5; ++i) mask[i] = ctx->needs_input_grad(i);
    torch::autograd::variable_list grads(5);
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [dx, d_bw, d_bb, d_w, d_b] = op.call(
          grad_outputs[0], saved[0], ctx->saved_data["stats"].toTensor(),
          ctx->saved_data["groups"].toInt(), ctx->saved_data["mode"].toInt(),
          mask);
      grads = {dx, d_bw, d_bb, d_w, d_b};
    }
    // create_graph=True: these gradients are not differentiable, and
    // values without a graph would make a second derivative silently
    // wrong (a gradient penalty would miss BCN's part).
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "BCN backend 'cpu' has no second derivative (a gradient of "
                "the gradient, create_graph=True): run BCN on the 'python' "
                "backend for it (MMBCN_BACKEND=python or "
                "mmbcn.ops.set_backend('python')), whose backward pass is "
                "differentiable");
    // No gradients for the buffers and the non-tensor arguments.
    grads.resize(12);
    return grads;
  }
};

std::tuple<Tensor, Tensor> bcn_cpu_forward_autograd(
    const Tensor& x, const Tensor& batch_weight, const Tensor& batch_bias,
    const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
    const Tensor& running_var, const Tensor& num_batches_tracked,
    int64_t groups, double eps, int64_t mode,
    const std::optional<Tensor>& rate) {
  auto out = BCNCpuFunction::apply(x, batch_weight, batch_bias, weight, bias,
                                   running_mean, running_var,
                                   num_batches_tracked, groups, eps, mode,
                                   rate);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY(mmbcn, m) {
  m.def(
      "bcn_cpu_forward(Tensor x, Tensor batch_weight, Tensor batch_bias, "
      "Tensor weight, Tensor bias, Tensor(a!) running_mean, "
      "Tensor(b!) running_var, Tensor(c!) num_batches_tracked, int groups, "
      "float eps, int stats_mode, Tensor? rate) -> (Tensor y, Tensor stats)");
  m.def(
      "bcn_cpu_backward(Tensor dy, Tensor x, Tensor stats, int groups, "
      "int stats_mode, bool[5] output_mask) -> (Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmbcn, CPU, m) {
  m.impl("bcn_cpu_forward", &bcn_cpu_forward);
  m.impl("bcn_cpu_backward", &bcn_cpu_backward);
}

TORCH_LIBRARY_IMPL(mmbcn, Autograd, m) {
  m.impl("bcn_cpu_forward", &bcn_cpu_forward_autograd);
}

// Importing the extension from Python runs the registrations above.
// `forward` is the same operator with its autograd, entered directly: in
// eager mode it spares the Python-side argument matching of torch.ops,
// which on small feature maps costs as much as the kernel.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Batch-Channel Normalization on CPU: torch.ops.mmbcn.bcn_cpu_*";
  m.def("forward", &bcn_cpu_forward_autograd,
        "mmbcn::bcn_cpu_forward with autograd, without the dispatcher's "
        "Python entry");
}
