"""The ``triton`` backend against the Python reference: outputs, all
gradients and buffers over several steps, in every mode, dtype and layout;
determinism, split reductions, overflow, and no host synchronization.
Without a GPU its kernels run on CPU tensors in Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py); on a GPU machine they run on
CUDA tensors. Needs torch and Triton alone (tools/benchmark/gpu_check.sh
runs it on a machine without OpenMMLab)."""
import copy

import pytest
import torch

from backend_steps import training_steps
from backend_steps import use_backend as backend
from bcn_reference import ReferenceAlgorithm1, randomize, reference_large_batch
from mmbcn import ops
from mmbcn.ops import BatchChannelNorm, triton_backend

pytestmark = pytest.mark.skipif(
    ops.BACKENDS['triton'].unavailable() is not None,
    reason=str(ops.BACKENDS['triton'].unavailable()))
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def layer(c=8, g=4, dtype=torch.float64, **kwargs):
    return randomize(BatchChannelNorm(c, g, **kwargs)).to(DEVICE, dtype)


def rand(*shape, dtype=torch.float64, seed=1, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen, dtype=torch.float64) * 3 +
         0.5).to(DEVICE, dtype)
    return x.contiguous(memory_format=torch.channels_last) \
        if channels_last else x


def run(module, x, dy, steps=2):
    return training_steps(module, x, dy, steps)


def compare(module, x, dy, rtol, steps=2):
    with backend('triton'):
        got = run(copy.deepcopy(module), x, dy, steps)
    reference = copy.deepcopy(module).double()
    with backend('python'):
        want = run(reference, x.double(), dy.double(), steps)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        scale = b.abs().max().clamp(min=1).item() if b.numel() else 1
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol,
                                   atol=rtol * scale)


@pytest.mark.parametrize('name', ['python', 'triton'])
def test_both_backends_match_the_paper_on_this_device(name):
    """Eq. 13-16 with batch statistics, and Algorithm 1 over steps, written
    plainly (tests/bcn_reference.py), on this machine's device."""
    large = layer(8, 4)
    micro = layer(8, 4, estimate=True)
    micro.reset_running_stats()
    ref = ReferenceAlgorithm1(8)
    ref.mu, ref.var = ref.mu.to(DEVICE), ref.var.to(DEVICE)
    with backend(name):
        x = rand(4, 8, 5, 6)
        torch.testing.assert_close(large(x), reference_large_batch(x, large))
        for step, rate in enumerate([0.5, 0.1, 0.3]):
            micro.update_rate = rate
            x = rand(1, 8, 5, 5, seed=step)
            torch.testing.assert_close(micro(x), ref(x, micro, rate))
            torch.testing.assert_close(micro.running_var, ref.var)


MODES = {
    'batch': dict(),
    'cumulative': dict(momentum=None),
    'estimate': dict(estimate=True, update_rate=0.3),
    'eval': dict(),
}


@pytest.mark.parametrize('mode', list(MODES))
@pytest.mark.parametrize('shape,groups', [((2, 8, 5, 6), 4), ((1, 6, 7), 3),
                                          ((3, 16, 1, 1), 16),
                                          ((2, 12, 2, 3, 4), 1),
                                          ((1, 64, 300), 32)])
def test_float64_matches_reference(mode, shape, groups):
    m = layer(shape[1], groups, **MODES[mode]).train(mode != 'eval')
    compare(m, rand(*shape), rand(*shape, seed=2), rtol=1e-10)


@pytest.mark.parametrize('dtype,rtol', [(torch.float32, 1e-4),
                                        (torch.float16, 1e-2),
                                        (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('mode', ['batch', 'estimate', 'eval'])
def test_low_precision_and_channels_last(dtype, rtol, channels_last, mode):
    """Statistics stay in float32 (the module's buffers and parameters);
    output and input gradient in the input's dtype and layout."""
    m = layer(16, 4, torch.float32, **MODES[mode]).train(mode != 'eval')
    x = rand(2, 16, 9, 7, dtype=dtype, channels_last=channels_last)
    dy = rand(2, 16, 9, 7, dtype=dtype, seed=2, channels_last=channels_last)
    with backend('triton'):
        xi = x.clone().requires_grad_()
        y = copy.deepcopy(m)(xi)
        y.backward(dy)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)
    assert xi.grad.dtype == dtype
    compare(m, x, dy, rtol=rtol, steps=1)


def test_reductions_split_across_programs(monkeypatch):
    """A long map is reduced by many programs whose partials merge in a
    fixed order: results match the reference and repeat bit for bit."""
    monkeypatch.setattr(triton_backend, 'TILE', 64)
    m = layer(4, 2, torch.float32)
    x = rand(1, 4, 40, 50, dtype=torch.float32)
    plan = triton_backend._Plan(x)
    assert plan.splits > 1
    dy = rand(1, 4, 40, 50, dtype=torch.float32, seed=3)
    with backend('triton'):
        first = run(copy.deepcopy(m), x, dy)
        second = run(copy.deepcopy(m), x, dy)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    compare(m, x, dy, rtol=1e-4)


def test_large_offset_small_spread_float32():
    """Mean 1e3, std 1e-2: moments merge with Chan's formula and the
    output is computed about the per-row mean, so float32 stays close to
    float64."""
    m32 = layer(8, 4, torch.float32)
    x = (rand(4, 8, 9, 9) * 1e-2 / 3 + 1e3).float()
    with backend('triton'):
        y32 = copy.deepcopy(m32)(x)
    with backend('python'):
        y64 = copy.deepcopy(m32).double()(x.double())
    assert (y32.double() - y64).abs().max() < 1e-4


def test_outlier_in_a_tile():
    """A far outlier among values of small spread: each tile's moments
    take a second pass about its own mean in registers."""
    m32 = layer(4, 2, torch.float32).eval()
    x = rand(2, 4, 64) * 1e-3 / 3 + 1.0
    x[:, :, 0] = 1e4
    with backend('triton'):
        y32 = copy.deepcopy(m32)(x.float())
    with backend('python'):
        y64 = copy.deepcopy(m32).double()(x)
    assert (y32.double() - y64).abs().max() < 1e-3


def test_overflow_and_constant_input():
    """Overflow turns the output NaN as in nn.GroupNorm (in evaluation the
    overflowing sample's group only; in training the batch statistics of
    its channels too); a constant input stays finite."""
    m = layer(8, 4, torch.float32)
    x = rand(2, 8, 4, 4, dtype=torch.float32)
    x[0, 0] *= 1e20
    with backend('triton'):
        train = copy.deepcopy(m)(x)
        y = copy.deepcopy(m).eval()(x)
        constant = copy.deepcopy(m)(torch.full_like(x, 7.0))
    assert torch.isnan(train[:, :2]).all()
    assert torch.isnan(y[0, :2]).all()  # sample 0, group 0
    assert torch.isfinite(y[0, 2:]).all() and torch.isfinite(y[1]).all()
    assert torch.isfinite(constant).all()


def test_no_host_synchronization(monkeypatch):
    """Nothing is read back to the host during a training step (no
    .item(), int(), float(), bool() or .tolist() on a tensor)."""
    m = layer(8, 4, torch.float32, momentum=None)
    x = rand(2, 8, 6, 6, dtype=torch.float32).requires_grad_()
    m(x.detach())  # warm the kernels

    def sync(*args):
        raise AssertionError('host synchronization')

    for name in ('item', 'tolist', '__int__', '__float__', '__bool__'):
        monkeypatch.setattr(torch.Tensor, name, sync)
    with backend('triton'):
        m(x).sum().backward()
    monkeypatch.undo()
    assert int(m.num_batches_tracked) == 2


def test_only_input_saved_for_backward():
    m = layer(8, 4, torch.float32)
    x = rand(4, 8, 16, 16, dtype=torch.float32).requires_grad_()
    saved = []
    with backend('triton'), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    assert sum(t.numel() for t in saved) == x.numel()


def test_tracing_takes_the_reference():
    """jit.trace cannot see Triton launches: auto takes the python backend
    while tracing, and a forced triton backend refuses."""
    m = layer(8, 4, torch.float32).eval()
    x = rand(2, 8, 5, 5, dtype=torch.float32)
    traced = torch.jit.trace(m, x, check_trace=False)
    other = rand(2, 8, 5, 5, dtype=torch.float32, seed=4) * 2
    torch.testing.assert_close(traced(other), m(other))
    with backend('triton'), pytest.raises(ops.BackendError,
                                          match='tracers'):
        torch.jit.trace(m, x, check_trace=False)
