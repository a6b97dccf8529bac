"""What is particular to the ``cpu`` backend, BCN's native CPU kernel
(mmbcn/ops/csrc/bcn_cpu.cpp): the same numbers whatever the thread count,
the statistics it keeps laid out as mmbcn/ops/saved_stats.py says, and a
real operator (torch.ops.mmbcn.*) for tracing, meta tensors and
torch.compile. tests/test_op_contract.py and tests/test_bcn.py run the
checks every backend owes through it."""
import copy

import pytest
import torch

from backend_steps import random_bcn as layer
from backend_steps import seeded_randn as rand
from backend_steps import training_steps, use_backend
from bcn_reference import batch_statistics
from mmbcn import ops
from mmbcn.ops import saved_stats

pytestmark = pytest.mark.skipif(
    ops.BACKENDS['cpu'].unavailable() is not None,
    reason=str(ops.BACKENDS['cpu'].unavailable()))


@pytest.fixture(autouse=True)
def cpu_backend():
    with use_backend('cpu'):
        yield


@pytest.mark.parametrize('estimate', [False, True])
def test_threads_give_identical_results(estimate):
    """Parallel over channel groups: every group is computed the same way
    whatever the thread count, so results are bitwise equal."""
    m = layer(64, 32, dtype=torch.float32, estimate=estimate,
              update_rate=0.1 if estimate else None)
    x = rand(3, 64, 40, 40, dtype=torch.float32)
    dy = rand(3, 64, 40, 40, dtype=torch.float32, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = training_steps(copy.deepcopy(m), x, dy, steps=2)
        torch.set_num_threads(2)
        two = training_steps(copy.deepcopy(m), x, dy, steps=2)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_kept_statistics_follow_the_shared_layout():
    """The operator's float64 statistics, read back with
    mmbcn/ops/saved_stats.py's table, are the quantities it names,
    computed here from their definitions (Eq. 13, Eq. 15)."""
    n, c, g, eps = 3, 8, 4, 1e-5
    m = layer(c, g)
    x = rand(n, c, 5, 6)
    bw, bb, gw = m.batch_weight.detach(), m.batch_bias.detach(), m.weight
    _, stats = torch.ops.mmbcn.bcn_cpu_forward(
        x, bw, bb, gw.detach(), m.bias.detach(), m.running_mean.clone(),
        m.running_var.clone(), m.num_batches_tracked.clone(), g, eps, 1,
        torch.tensor(0.1, dtype=torch.float64))
    got = saved_stats.split(stats, n, c, g)
    assert stats.numel() == saved_stats.total(n, c, g)
    mu, var_hat = batch_statistics(x)
    inv_std = (var_hat + eps).rsqrt()
    x_dot = ((x - mu.view(1, c, 1, 1)) * (bw * inv_std).view(1, c, 1, 1) +
             bb.view(1, c, 1, 1))  # Eq. 13
    grouped = x_dot.reshape(n, g, -1)
    r = (grouped.var(-1, correction=0) + eps).rsqrt()  # Eq. 15
    dot_mean = x_dot.mean((2, 3))
    dev = dot_mean - grouped.mean(-1).repeat_interleave(c // g, 1)
    want = dict(mean=x.mean((2, 3)), var=x.var((2, 3), correction=0),
                dev=dev, a=bw * inv_std, inv_std=inv_std, batch_mean=mu,
                r=r, s=gw.detach() * r)
    assert list(got) == list(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value.flatten(), msg=name)


# ------------------------------------------------------------ a real op

@pytest.mark.parametrize('train', [False, True])
def test_jit_trace_records_the_operator(train):
    m = layer(8, 4, dtype=torch.float32, estimate=True,
              update_rate=0.0 if train else None).train(train)
    x = rand(2, 8, 5, 5, dtype=torch.float32)
    traced = torch.jit.trace(m, x, check_trace=False)
    assert 'mmbcn::bcn_cpu_forward' in str(traced.graph)
    other = rand(3, 8, 5, 5, dtype=torch.float32, seed=7) * 2 + 1
    torch.testing.assert_close(traced(other), m(other))


def test_meta_tensors_and_compile():
    m = layer(8, 4, dtype=torch.float32)
    with torch.device('meta'):
        x = torch.empty(2, 8, 5, 5)
        params = [torch.empty(8), torch.empty(8), torch.empty(4),
                  torch.empty(4)]
        y, stats = torch.ops.mmbcn.bcn_cpu_forward(
            x, *params, torch.empty(8), torch.empty(8),
            torch.empty((), dtype=torch.long), 4, 1e-5, 1,
            torch.tensor(0.1, dtype=torch.float64, device='cpu'))
    assert y.shape == x.shape and y.device.type == 'meta'
    assert stats.dtype == torch.float64
    assert stats.numel() == saved_stats.total(2, 8, 4)
    x = rand(2, 8, 5, 5, dtype=torch.float32).requires_grad_()
    compiled = torch.compile(copy.deepcopy(m), backend='aot_eager',
                             fullgraph=True)
    y = compiled(x)
    (gx, ) = torch.autograd.grad(y.pow(2).sum(), x)
    reference = copy.deepcopy(m)
    x2 = x.detach().clone().requires_grad_()
    y2 = reference(x2)
    (gx2, ) = torch.autograd.grad(y2.pow(2).sum(), x2)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(gx, gx2)
