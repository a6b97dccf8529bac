"""The ``cpu`` backend, BCN's native CPU kernel (mmbcn/ops/csrc/bcn_cpu.cpp):
it gives the Python reference's numbers in every mode, shape, dtype and
thread count, and it is a real operator (torch.ops.mmbcn.*) for tracing,
meta tensors and torch.compile. test_bcn.py runs the paper checks through
every backend."""
import copy

import pytest
import torch

from backend_steps import training_steps
from backend_steps import use_backend as backend
from bcn_reference import randomize, reference_bcn
from mmbcn import ops
from mmbcn.ops import BatchChannelNorm

pytestmark = pytest.mark.skipif(
    ops.BACKENDS['cpu'].unavailable() is not None,
    reason=str(ops.BACKENDS['cpu'].unavailable()))


@pytest.fixture(autouse=True)
def cpu_backend():
    with backend('cpu'):
        yield


def layer(c=8, g=4, dtype=torch.float64, seed=0, **kwargs):
    return randomize(BatchChannelNorm(c, g, **kwargs).to(dtype), seed)


def rand(*shape, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype)


def run(module, x, dy, steps=3):
    return training_steps(module, x, dy, steps)


def both(module, x, dy, steps=3):
    native = run(copy.deepcopy(module), x, dy, steps)
    with backend('python'):
        python = run(copy.deepcopy(module), x, dy, steps)
    return native, python


@pytest.mark.parametrize('mode', ['batch', 'cumulative', 'estimate', 'eval'])
@pytest.mark.parametrize('shape,groups', [((4, 8, 5, 6), 4), ((1, 6, 7), 3),
                                          ((3, 16, 1, 1), 16),
                                          ((2, 12, 2, 3, 4), 1),
                                          ((5, 32, 49), 32)])
def test_matches_python_formulation(mode, shape, groups):
    """float64: outputs, the gradients of x and all four affines, and the
    buffers agree to rounding over several steps."""
    kwargs = dict(estimate=mode == 'estimate', momentum=None
                  if mode == 'cumulative' else 0.1,
                  update_rate=0.3 if mode == 'estimate' else None)
    m = layer(shape[1], groups, **kwargs)
    m.train(mode != 'eval')
    x = rand(*shape) * 3 + 0.5
    native, python = both(m, x, rand(*shape, seed=2))
    assert len(native) == len(python)
    for a, b in zip(native, python):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_float32_matches_float64_reference():
    m = layer(16, 4, dtype=torch.float32).eval()
    x = rand(2, 16, 9, 9, dtype=torch.float32)
    expected = reference_bcn(x.double(), m.running_mean.double(),
                             m.running_var.double(),
                             m.batch_weight.double(), m.batch_bias.double(),
                             m.weight.double(), m.bias.double(), 4, m.eps)
    torch.testing.assert_close(m(x).double(), expected, rtol=1e-5,
                               atol=1e-5)


def test_large_offset_small_spread_float32():
    """Mean 1e3, std 1e-2 in float32: moments and output are computed about
    the per-row mean, so float32 stays within 1e-4 of float64 (the Python
    formulation's A*x + B loses ~1e-2 here)."""
    m32 = layer(8, 4, dtype=torch.float32)
    m64 = copy.deepcopy(m32).double()
    x = rand(4, 8, 9, 9) * 1e-2 + 1e3
    x32 = x.float().requires_grad_()
    x64 = x32.detach().double().requires_grad_()
    y32, y64 = m32(x32), m64(x64)
    assert (y32.double() - y64).abs().max() < 1e-4
    dy = rand(4, 8, 9, 9, seed=3)
    y32.backward(dy.float())
    y64.backward(dy)
    scale = x64.grad.abs().max()
    assert (x32.grad.double() - x64.grad).abs().max() / scale < 1e-3


def test_first_element_outlier_takes_second_pass():
    """A row whose first element lies far from the rest: the one-pass
    moments about it would cancel; the kernel redoes them about the mean."""
    m32 = layer(4, 2, dtype=torch.float32).eval()
    m64 = copy.deepcopy(m32).double()
    x = rand(2, 4, 64) * 1e-3 + 1.0
    x[:, :, 0] = 1e4
    assert (m32(x.float()).double() - m64(x)).abs().max() < 1e-3


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
        one = run(copy.deepcopy(m), x, dy, steps=2)
        torch.set_num_threads(2)
        two = run(copy.deepcopy(m), x, dy, steps=2)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_partial_gradients_and_non_contiguous_grad():
    m = layer()
    for p in (m.batch_weight, m.weight):
        p.requires_grad_(False)
    x = rand(3, 8, 4, 5).requires_grad_()
    y = m(x)
    dy = rand(1, 8, 1, 5).expand_as(y)  # stride-0 gradient
    y.backward(dy)
    assert m.batch_weight.grad is None and m.weight.grad is None
    with backend('python'):
        reference = layer()
        for p in (reference.batch_weight, reference.weight):
            p.requires_grad_(False)
        x2 = x.detach().clone().requires_grad_()
        reference(x2).backward(dy)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(m.bias.grad, reference.bias.grad)
    torch.testing.assert_close(m.batch_bias.grad, reference.batch_bias.grad)


def test_only_input_saved_for_backward():
    """Autograd keeps x (and O(N*C) statistics inside the node), nothing
    of full size besides."""
    m = layer(dtype=torch.float32)
    x = rand(4, 8, 16, 16, dtype=torch.float32).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    assert sum(t.numel() for t in saved) == x.numel()


def test_overflow_gives_nan_as_group_norm():
    """|x| past sqrt(float32 max): the group's output is NaN (as
    nn.GroupNorm's), not a finite constant."""
    m = layer(8, 4, dtype=torch.float32).eval()
    x = rand(2, 8, 4, 4, dtype=torch.float32)
    x[0, 0] *= 1e20
    y = m(x)
    gn = torch.nn.GroupNorm(4, 8)(x)
    assert not torch.isfinite(gn[0, :2]).all()
    assert torch.isnan(y[0, :2]).all()  # group 0 of sample 0
    assert torch.isfinite(y[0, 2:]).all() and torch.isfinite(y[1]).all()


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
