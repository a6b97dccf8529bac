"""What every backend of mmbcn.ops's table owes a BCN call, checked once
for all of them on this machine's device (CUDA where present, else CPU;
Triton's kernels then run in its interpreter): the reference backend's
numbers in every mode and shape, precision at a large mean and a small
spread, overflow as in nn.GroupNorm, gradients of a subset of the
parameters, and nothing of full size but the input kept for the backward
pass. A registered backend is parametrized here without editing this file
(tests/test_backends.py checks that with a dummy one). Needs torch and
pytest alone."""
import copy

import pytest
import torch

from backend_steps import backend_params
from backend_steps import random_bcn as make
from backend_steps import seeded_randn, training_steps, use_backend
from bcn_reference import reference_bcn
from mmbcn.ops import backends

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
#: Backends that compute the output about each row's mean (y = A (x - m)
#: + C), so that float32 keeps float64's digits where the reference's
#: A x + B cancels.
ABOUT_THE_MEAN = {'cpu', 'triton'}
LAYER_MODES = {
    'batch': dict(),
    'cumulative': dict(momentum=None),
    'estimate': dict(estimate=True, update_rate=0.3),
    'eval': dict(),
}


@pytest.fixture(autouse=True, params=backend_params(DEVICE))
def backend(request):
    """Every test runs through each backend of the table, forced."""
    with use_backend(request.param):
        yield request.param


def rand(*shape, **kwargs):
    return seeded_randn(*shape, device=DEVICE, **kwargs)


def layer(c=8, g=4, dtype=torch.float64, **kwargs):
    return make(c, g, dtype=dtype, device=DEVICE, **kwargs)


@pytest.mark.parametrize('mode', list(LAYER_MODES))
@pytest.mark.parametrize('shape,groups', [((4, 8, 5, 6), 4), ((1, 6, 7), 3),
                                          ((3, 16, 1, 1), 16),
                                          ((2, 12, 2, 3, 4), 1),
                                          ((1, 64, 300), 32)])
def test_matches_the_reference_backend(backend, mode, shape, groups):
    """float64: outputs, the gradients of x and all four affines, and the
    buffers agree with the reference to rounding over two steps."""
    if backend == backends.REFERENCE:
        pytest.skip('the reference itself (tests/test_bcn.py checks it '
                    'against the paper)')
    m = layer(shape[1], groups, **LAYER_MODES[mode]).train(mode != 'eval')
    x, dy = rand(*shape, loc=0.5, scale=3.0), rand(*shape, seed=2)
    got = training_steps(copy.deepcopy(m), x, dy, steps=2)
    with use_backend(backends.REFERENCE):
        want = training_steps(copy.deepcopy(m), x, dy, steps=2)
    assert len(got) == len(want)
    for a, b in zip(got, want):
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


@pytest.mark.parametrize('spread,bound', [(1e-1, 1e-2), (1e-2, 1e-4)])
def test_large_offset_small_spread(backend, spread, bound):
    """Mean 1e3 in float32, no E[x^2] - E[x]^2 cancellation: within
    ``bound`` of float64, output and (relative) input gradient. At the
    smaller spread only the backends that compute about the row mean."""
    if bound < 1e-2 and backend not in ABOUT_THE_MEAN:
        pytest.skip(f'{backend} computes A * x + B, which loses ~1e-2 in '
                    'float32 here')
    m32 = layer(dtype=torch.float32)
    m64 = copy.deepcopy(m32).double()
    x = rand(4, 8, 9, 9, loc=1e3, scale=spread)
    x32 = x.float().requires_grad_()
    x64 = x32.detach().double().requires_grad_()
    y32, y64 = m32(x32), m64(x64)
    assert (y32.double() - y64).abs().max() < bound
    dy = rand(4, 8, 9, 9, seed=3)
    y32.backward(dy.float())
    y64.backward(dy)
    scale = x64.grad.abs().max()
    assert (x32.grad.double() - x64.grad).abs().max() / scale < bound * 10


def test_outlier_among_a_small_spread():
    """A row whose first element lies far from the rest (moments about
    it, or about a tile's first value, would cancel)."""
    m32 = layer(4, 2, dtype=torch.float32).eval()
    m64 = copy.deepcopy(m32).double()
    x = rand(2, 4, 64, loc=1.0, scale=1e-3)
    x[:, :, 0] = 1e4
    assert (m32(x.float()).double() - m64(x)).abs().max() < 1e-3


@pytest.mark.parametrize('train', [True, False])
def test_overflow_propagates_as_in_group_norm(train):
    """|x| beyond sqrt(float32 max) turns the output non-finite, as
    nn.GroupNorm does, instead of a finite constant; in evaluation only
    the overflowing sample's group."""
    m = layer(dtype=torch.float32).train(train)
    x = rand(2, 8, 4, 4, dtype=torch.float32)
    x[0, 0] *= 1e20
    assert not torch.isfinite(torch.nn.GroupNorm(4, 8)(x.cpu())[0, :2]).all()
    y = m(x)
    assert not torch.isfinite(y[0, :2]).any()  # sample 0, group 0
    if not train:
        assert torch.isfinite(y[0, 2:]).all() and torch.isfinite(y[1]).all()


def test_partial_gradients_and_a_stride_0_gradient(backend):
    """Gradients of a subset of the parameters, with an expanded output
    gradient, as the reference gives them."""
    results = []
    for name in (backend, backends.REFERENCE):
        m = layer()
        for p in (m.batch_weight, m.weight):
            p.requires_grad_(False)
        x = rand(3, 8, 4, 5).requires_grad_()
        dy = rand(1, 8, 1, 5).expand(3, 8, 4, 5)
        with use_backend(name):
            m(x).backward(dy)
        assert m.batch_weight.grad is None and m.weight.grad is None
        results.append([x.grad, m.bias.grad, m.batch_bias.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_only_the_input_is_kept_at_full_size():
    """Autograd keeps x and O(N*C) statistics for the backward pass,
    nothing else of x's size."""
    m = layer(dtype=torch.float32)
    x = rand(4, 8, 16, 16, dtype=torch.float32).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    full = [t for t in saved if t.numel() >= x.numel()]
    assert len(full) == 1 and full[0].data_ptr() == x.data_ptr()
    assert sum(t.numel() for t in saved) - x.numel() <= 8 * 4 * 8
