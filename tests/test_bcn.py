"""BCN against the paper written plainly
(tests/helpers/bcn_reference.py), through every CPU backend of
mmbcn.ops's table: the Python reference, the native CPU kernel, the
Triton kernels (on CPU tensors under TRITON_INTERPRET=1) and any
registered one. tests/test_op_contract.py holds the checks
against the reference backend and of precision."""
import copy

import pytest
import torch

from backend_steps import backend_params
from backend_steps import random_bcn as make
from backend_steps import seeded_randn as rand
from backend_steps import use_backend
from bcn_reference import (ReferenceAlgorithm1, batch_statistics, randomize,
                           reference_bcn, reference_large_batch)
from mmbcn import ops
from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm

D = torch.float64


@pytest.fixture(autouse=True, params=backend_params('cpu'))
def backend(request):
    """Every test runs through each backend of the table, forced."""
    with use_backend(request.param):
        yield request.param


def grads(out, inputs, dy):
    return torch.autograd.grad(out, inputs, dy)


def params(layer):
    return [layer.batch_weight, layer.batch_bias, layer.weight, layer.bias]


# ------------------------------------------------------------ large batch

@pytest.mark.parametrize('shape', [(4, 8, 5, 6), (3, 8), (2, 8, 7),
                                   (2, 8, 3, 4, 5)])
def test_large_batch_training_matches_paper(shape):
    layer = make()
    x = rand(*shape).requires_grad_()
    dy = rand(*shape, seed=2)
    y = layer(x)
    expected = reference_large_batch(x, layer)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    got = grads(y, [x] + params(layer), dy)
    want = grads(expected, [x] + params(layer), dy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_large_batch_running_statistics_follow_batchnorm():
    layer = make(momentum=0.1)
    start_mean = layer.running_mean.clone()
    start_var = layer.running_var.clone()
    bn = torch.nn.BatchNorm2d(8, momentum=0.1).to(D)
    with torch.no_grad():
        bn.running_mean.copy_(start_mean)
        bn.running_var.copy_(start_var)
    for seed in range(3):
        x = rand(4, 8, 5, 6, seed=seed)
        layer(x)
        bn(x)
    torch.testing.assert_close(layer.running_mean, bn.running_mean)
    torch.testing.assert_close(layer.running_var, bn.running_var)
    assert int(layer.num_batches_tracked) == 3


def test_cumulative_average_when_momentum_is_none():
    layer = make(momentum=None)
    xs = [rand(4, 8, 3, 3, seed=s) for s in range(3)]
    for x in xs:
        layer(x)
    n = xs[0].numel() // 8
    means = torch.stack([batch_statistics(x)[0] for x in xs])
    vars_ = torch.stack([batch_statistics(x)[1] * n / (n - 1) for x in xs])
    torch.testing.assert_close(layer.running_mean, means.mean(0))
    torch.testing.assert_close(layer.running_var, vars_.mean(0))


@pytest.mark.parametrize('estimate', [False, True])
def test_eval_uses_statistics_without_updating(estimate):
    layer = make(estimate=estimate).eval()
    before = copy.deepcopy(layer.state_dict())
    x = rand(2, 8, 4, 4)
    y = layer(x)
    expected = reference_bcn(x, layer.running_mean, layer.running_var,
                             layer.batch_weight, layer.batch_bias,
                             layer.weight, layer.bias, 4)
    torch.testing.assert_close(y, expected)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------ Algorithm 1

def test_algorithm1_several_steps():
    layer = BatchChannelNorm(8, 4, estimate=True).to(D)
    assert torch.equal(layer.running_mean, torch.zeros(8, dtype=D))
    assert torch.equal(layer.running_var, torch.ones(8, dtype=D))
    randomize(layer)
    layer.reset_running_stats()
    ref = ReferenceAlgorithm1(8)
    for step, rate in enumerate([0.5, 0.1, 0.02, 0.3]):
        layer.update_rate = rate
        x = rand(1, 8, 5, 5, seed=step, loc=3.0, scale=2.0).requires_grad_()
        dy = rand(1, 8, 5, 5, seed=10 + step)
        y = layer(x)
        expected = ref(x, layer, rate)
        torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(layer.running_mean, ref.mu)
        torch.testing.assert_close(layer.running_var, ref.var)
        # No gradient flows through the estimates (they are constants).
        for a, b in zip(grads(y, [x] + params(layer), dy),
                        grads(expected, [x] + params(layer), dy)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_algorithm1_variance_is_about_old_mean():
    layer = BatchChannelNorm(4, 2, estimate=True, update_rate=1.0).to(D)
    x = torch.full((1, 4, 2, 2), 3.0, dtype=D)
    layer(x)
    # old mean 0: sigma_dot^2 = E[(3 - 0)^2] = 9, not the batch variance 0
    torch.testing.assert_close(layer.running_mean, torch.full((4, ), 3.0,
                                                              dtype=D))
    torch.testing.assert_close(layer.running_var, torch.full((4, ), 9.0,
                                                             dtype=D))


def test_estimate_mode_without_rate_names_the_fix():
    layer = BatchChannelNorm(8, 4, estimate=True)
    with pytest.raises(RuntimeError, match='BCNUpdateRateHook'):
        layer(torch.randn(1, 8, 3, 3))
    layer.eval()(torch.randn(1, 8, 3, 3))  # evaluation needs no rate


def test_update_rate_validation():
    with pytest.raises(ValueError, match='estimate=True'):
        BatchChannelNorm(8, 4, update_rate=0.1)
    layer = BatchChannelNorm(8, 4, estimate=True)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        layer.update_rate = 2.0
    layer.update_rate = 0.01
    assert layer.update_rate == 0.01


# ------------------------------------------------------------ gradients

@pytest.mark.parametrize('estimate', [False, True])
@pytest.mark.parametrize('train', [True, False])
def test_gradcheck(estimate, train, backend):
    """float64 gradcheck w.r.t. the input and all four affines. In estimate
    training the rate is 0 so that perturbing x does not move the estimates
    (no gradient flows through them by design; test_algorithm1_several_steps
    checks the gradient with r > 0 against the reference)."""
    layer = make(c=6, g=3, estimate=estimate)
    layer.train(train)
    if estimate:
        layer.update_rate = 0.0
    names = ('batch_weight', 'batch_bias', 'weight', 'bias')

    def fn(x, *values):
        for name, value in zip(names, values):
            layer._parameters[name] = value
        return layer(x)

    x = rand(3, 6, 3, 2).requires_grad_()
    values = [p.detach().clone().requires_grad_() for p in params(layer)]
    # Triton's interpreter is slow: random projections of the Jacobian
    # (fast mode) instead of all of it.
    assert torch.autograd.gradcheck(fn, (x, *values),
                                    fast_mode=backend == 'triton')


def test_training_path_and_inference_path_agree():
    layer = make()
    x = rand(4, 8, 5, 5)
    state = copy.deepcopy(layer.state_dict())
    y_grad = layer(x.clone().requires_grad_())
    layer.load_state_dict(state)
    with torch.no_grad():
        y_plain = layer(x)
    torch.testing.assert_close(y_grad, y_plain)


# ------------------------------------------------------------ robustness

def test_num_groups_must_divide_channels():
    with pytest.raises(ValueError, match='num_groups=32.*num_features=48'):
        BatchChannelNorm(48, 32)


def test_wrong_channel_count_names_both():
    layer = BatchChannelNorm(8, 4)
    with pytest.raises(ValueError, match=r'\(N, 8, \*\).*\(2, 6, 3, 3\)'):
        layer(torch.randn(2, 6, 3, 3))


@pytest.mark.parametrize('cls', [BatchChannelNorm, SyncBatchChannelNorm])
@pytest.mark.parametrize('estimate', [False, True])
def test_empty_batch(cls, estimate):
    layer = randomize(cls(8, 4, estimate=estimate))
    if estimate:
        layer.update_rate = 0.5
    before = copy.deepcopy(layer.state_dict())
    x = torch.randn(0, 8, 7, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 8, 7, 7)
    y.sum().backward()
    assert all(p.grad is not None for p in params(layer))
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_single_value_per_channel_in_large_batch_training():
    layer = BatchChannelNorm(8, 4)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        layer(torch.randn(1, 8, 1, 1))
    micro = BatchChannelNorm(8, 4, estimate=True, update_rate=0.1)
    assert torch.isfinite(micro(torch.randn(1, 8, 1, 1))).all()


@pytest.mark.parametrize('estimate', [False, True])
def test_constant_input_gives_finite_output(estimate):
    layer = BatchChannelNorm(8, 4, estimate=estimate,
                             update_rate=0.5 if estimate else None)
    x = torch.full((2, 8, 4, 4), 7.0, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


CL = torch.channels_last


@pytest.mark.parametrize('estimate', [False, True])
@pytest.mark.parametrize('x_format,dy_format', [(CL, CL), (CL, None),
                                                (None, CL)],
                         ids=['x_and_dy', 'x', 'dy'])
def test_channels_last_forward_and_backward(backend, estimate, x_format,
                                            dy_format):
    """Input and output gradient in channels_last (a network in that
    format, or a channels_last layer after this one) give the output,
    the gradients of the input and all four affines, and the statistics
    of contiguous tensors. A backend that does not declare channels_last
    (the cpu kernel; refusal tested in test_backends.py) runs that input
    under auto, which hands it to another."""
    x = rand(2, 8, 6, 6, dtype=torch.float32)
    dy = rand(2, 8, 6, 6, dtype=torch.float32, seed=2)
    kwargs = dict(estimate=True, update_rate=0.3) if estimate else {}
    formats = [(torch.contiguous_format, torch.contiguous_format),
               (x_format or torch.contiguous_format,
                dy_format or torch.contiguous_format)]
    results = []
    for x_fmt, dy_fmt in formats:
        layer = make(dtype=torch.float32, **kwargs)
        xi = x.clone(memory_format=x_fmt).requires_grad_()
        declared = ops.BACKENDS[backend].layouts
        with use_backend('auto' if x_fmt == CL
                         and 'channels_last' not in declared else backend):
            y = layer(xi)
            y.backward(dy.contiguous(memory_format=dy_fmt))
        assert y.is_contiguous(memory_format=x_fmt)
        results.append([y, xi.grad] + [p.grad for p in params(layer)] +
                       [layer.running_mean, layer.running_var])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_state_dict_round_trip_restores_the_statistics():
    """Loaded running statistics are what evaluation normalizes with."""
    trained = make(dtype=torch.float32)
    trained(rand(4, 8, 5, 5, dtype=torch.float32, loc=2.0, scale=3.0))
    fresh = BatchChannelNorm(8, 4)
    fresh.load_state_dict(trained.state_dict())
    assert set(fresh.state_dict()) == {
        'weight', 'bias', 'batch_weight', 'batch_bias', 'running_mean',
        'running_var', 'num_batches_tracked'
    }
    x = rand(2, 8, 6, 6, dtype=torch.float32)
    expected = reference_bcn(x, trained.running_mean, trained.running_var,
                             trained.batch_weight, trained.batch_bias,
                             trained.weight, trained.bias, 4)
    torch.testing.assert_close(fresh.eval()(x), expected)
    assert not torch.allclose(BatchChannelNorm(8, 4).eval()(x), expected)


def test_autocast_keeps_statistics_in_float32(backend):
    if torch.bfloat16 not in ops.BACKENDS[backend].dtypes:
        pytest.skip(f'{backend} does not serve bfloat16 (refusals are '
                    'tested in test_backends.py)')
    layer = make(dtype=torch.float32)
    x = rand(2, 8, 6, 6, dtype=torch.float32)
    reference = layer(x)
    layer.running_mean.copy_(make(dtype=torch.float32).running_mean)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = layer(x.bfloat16().requires_grad_())
    assert y.dtype == torch.bfloat16
    assert layer.running_mean.dtype == torch.float32
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)
    y.float().sum().backward()


def test_sync_bcn_refuses_unsynchronized_estimates():
    """SyncBCN against BCN needs several processes (test_distributed.py):
    on one process both take the same path."""
    with pytest.raises(ValueError, match="type='BCN' with sync_estimates"):
        SyncBatchChannelNorm(8, 4, estimate=True, sync_estimates=False)


@pytest.mark.parametrize('kwargs,match', [
    (dict(momentum=-0.1), r'momentum=-0.1 must lie in \[0, 1\]'),
    (dict(momentum=1.5), r'momentum=1.5 must lie in \[0, 1\]'),
    (dict(momentum=float('nan')), r'momentum=nan must lie in \[0, 1\]'),
    (dict(eps=0.0), 'eps=0.0 must be a positive finite number'),
    (dict(eps=-1e-5), 'eps=-1e-05 must be a positive finite number'),
    (dict(eps=float('inf')), 'eps=inf must be a positive finite number'),
    (dict(eps=float('nan')), 'eps=nan must be a positive finite number'),
])
def test_bad_momentum_and_eps_are_refused_at_build_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchChannelNorm(8, 4, **kwargs)


@pytest.mark.parametrize('args,kwargs,match', [
    ((8, 2.0), {}, 'num_groups=2.0 must be a whole number'),
    ((8.0, 2), {}, 'num_features=8.0 must be a whole number'),
    ((8, 2), dict(estimate='False'), "estimate='False' must be True or "
     'False'),
    ((8, 2), dict(sync_estimates=1), 'sync_estimates=1 must be True or '
     'False'),
])
def test_mistyped_arguments_are_refused_by_name(args, kwargs, match):
    """A truthy string does not switch estimate mode on; a float group
    count is not passed on to tensor constructors."""
    with pytest.raises(TypeError, match=match):
        BatchChannelNorm(*args, **kwargs)


@pytest.mark.parametrize('rate', [float('nan'), float('inf'), -0.1, 1.5])
def test_update_rate_outside_0_1_is_refused(rate):
    layer = BatchChannelNorm(8, 4, estimate=True)
    with pytest.raises(ValueError, match='update_rate=.* must lie in'):
        layer.update_rate = rate
