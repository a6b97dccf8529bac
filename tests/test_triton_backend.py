"""What is particular to the ``triton`` backend: the paper's equations on
this machine's device, low precision and channels_last against the
reference, split reductions that repeat bit for bit, no host
synchronization, and tracing refused. Without a GPU its kernels run on CPU
tensors in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py);
on a GPU machine they run on CUDA tensors. tests/test_op_contract.py runs
the checks every backend owes through it. Needs torch and Triton alone
(tools/benchmark/gpu_check.sh runs it on a machine without OpenMMLab)."""
import copy

import pytest
import torch

from backend_steps import random_bcn, seeded_randn, training_steps
from backend_steps import use_backend as backend
from bcn_reference import ReferenceAlgorithm1, reference_large_batch
from mmbcn import ops
from mmbcn.ops import triton_backend

pytestmark = pytest.mark.skipif(
    ops.BACKENDS['triton'].unavailable() is not None,
    reason=str(ops.BACKENDS['triton'].unavailable()))
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def layer(c=8, g=4, dtype=torch.float64, **kwargs):
    return random_bcn(c, g, dtype=dtype, device=DEVICE, **kwargs)


def rand(*shape, dtype=torch.float64, seed=1, channels_last=False):
    x = seeded_randn(*shape, seed=seed, loc=0.5, scale=3.0).to(DEVICE, dtype)
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
    plainly (tests/helpers/bcn_reference.py), on this machine's device."""
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
