"""BCN written plainly from the paper, independent of mmbcn's formulation:
Eq. 13 as a per-channel affine of the tensor, Eq. 15 by reshaping into
groups, Algorithm 1 line by line."""
import torch


def _per_channel(t, x):
    return t.view((1, -1) + (1, ) * (x.dim() - 2))


def reference_bcn(x, mu_hat, var_hat, gamma_b, beta_b, gamma_c, beta_c,
                  num_groups, eps=1e-5):
    # Eq. 13: x_dot = gamma_b (x - mu_hat) / sigma_hat + beta_b
    x_dot = _per_channel(gamma_b, x) * (x - _per_channel(mu_hat, x)) / \
        torch.sqrt(_per_channel(var_hat, x) + eps) + _per_channel(beta_b, x)
    # Eq. 15: reshape to (B, G, C/G * spatial), normalize each (b, g).
    grouped = x_dot.reshape(x.shape[0], num_groups, -1)
    mu = grouped.mean(dim=-1, keepdim=True)
    var = ((grouped - mu)**2).mean(dim=-1, keepdim=True)
    y = (grouped - mu) / torch.sqrt(var + eps)
    y = gamma_c.view(1, -1, 1) * y + beta_c.view(1, -1, 1)
    return y.reshape(x.shape)


def batch_statistics(x):
    """Per-channel mean and biased variance over (N, spatial)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    mu = flat.mean(dim=1)
    var = ((flat - mu[:, None])**2).mean(dim=1)
    return mu, var


def reference_large_batch(x, layer):
    """Eq. 16, BCN(X) = CN(BN(X)) with batch statistics (training)."""
    mu, var = batch_statistics(x)
    return reference_bcn(x, mu, var, layer.batch_weight, layer.batch_bias,
                         layer.weight, layer.bias, layer.num_groups,
                         layer.eps)


class ReferenceAlgorithm1:
    """Micro-batch BCN (Algorithm 1) with its own estimates."""

    def __init__(self, num_channels, dtype=torch.float64):
        self.mu = torch.zeros(num_channels, dtype=dtype)
        self.var = torch.ones(num_channels, dtype=dtype)

    def step(self, x, r):
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1)
        mu_dot = flat.mean(dim=1)  # line 1
        var_dot = ((flat - self.mu[:, None])**2).mean(dim=1)  # line 2
        self.mu = self.mu + r * (mu_dot - self.mu)  # line 3
        self.var = self.var + r * (var_dot - self.var)  # line 4

    def __call__(self, x, layer, r):
        self.step(x, r)
        # lines 5-8 with the updated estimates
        return reference_bcn(x, self.mu, self.var, layer.batch_weight,
                             layer.batch_bias, layer.weight, layer.bias,
                             layer.num_groups, layer.eps)


def randomize(layer, seed=0):
    """Non-trivial affines and statistics, so tests can tell them apart."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ('weight', 'batch_weight'):
            p = getattr(layer, name)
            p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
        for name in ('bias', 'batch_bias'):
            p = getattr(layer, name)
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        layer.running_mean.copy_(
            torch.randn(layer.running_mean.shape, generator=g,
                        dtype=layer.running_mean.dtype))
        layer.running_var.copy_(0.5 + torch.rand(
            layer.running_var.shape, generator=g,
            dtype=layer.running_var.dtype))
    return layer
