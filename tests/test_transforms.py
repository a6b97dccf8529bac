"""BCN under the transforms users wrap around models: ``torch.compile``
(inductor and aot_eager), ``torch.export``, ``torch.jit.trace``, a second
derivative (gradient penalties), and inputs that are not floating point.

Each transformed model is compared with the same model run eagerly:
outputs, every gradient, and the statistics buffers over training steps
whose Algorithm 1 rate changes every step (as the learning rate does).
Needs torch alone (tools/benchmark/gpu_check.sh runs it on CUDA tensors
on a machine without OpenMMLab)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backend_steps import use_backend
from bcn_reference import randomize
from mmbcn import ops
from mmbcn.ops import BatchChannelNorm, backends

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
#: The backends of the table that can run on this machine's device.
SERVING = [
    name for name in backends.names()
    if DEVICE in ops.BACKENDS[name].devices
    and ops.BACKENDS[name].unavailable() is None
]
#: Those a plain call may take (``auto``'s candidates).
BACKENDS = [n for n in SERVING if ops.BACKENDS[n].priority is not None]
#: The kernels: every backend but the reference, whose backward pass is
#: differentiable again.
KERNELS = [n for n in SERVING if n != 'python']
TRITON = 'triton' in SERVING
MODES = ['fixed', 'batch', 'estimate']


class Block(nn.Sequential):
    """conv -> BCN -> ReLU, twice: BCN between operations a compiler can
    fuse, as in a network."""

    def __init__(self, mode, channels=8, groups=4):
        layers = []
        for i in range(2):
            bcn = randomize(
                BatchChannelNorm(channels, groups,
                                 estimate=mode == 'estimate'), seed=i)
            if mode == 'estimate':
                bcn.update_rate = 0.1
            layers += [nn.Conv2d(channels, channels, 3, padding=1), bcn,
                       nn.ReLU()]
        super().__init__(*layers)
        self.train(mode != 'fixed')


def bcn_layers(model):
    return [m for m in model.modules() if isinstance(m, BatchChannelNorm)]


def inputs(dtype, channels_last, steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(2, 8, 6, 5, generator=gen, dtype=torch.float64) * 2 +
          0.5 for _ in range(steps)]
    xs = [x.to(DEVICE, dtype) for x in xs]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    return xs


def train_steps(model, xs):
    """Loss, input and parameter gradients, and buffers after each step;
    Algorithm 1's rate changes every step."""
    params = list(model.parameters())
    record = []
    for step, x in enumerate(xs):
        for layer in bcn_layers(model):
            if layer.estimate:
                layer.update_rate = 0.1 / (step + 1)
        x = x.clone().requires_grad_()
        loss = model(x).pow(2).mean()
        grads = torch.autograd.grad(loss, [x] + params)
        record += [loss, *grads, *(b.clone() for b in model.buffers())]
    return record


def assert_same(got, want, dtype):
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert len(got) == len(want)
    for a, b in zip(got, want):
        scale = b.abs().max().clamp(min=1).item() if b.numel() else 1
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


def compiled_against_eager(name, mode, dtype, channels_last, compiler):
    model = Block(mode).to(DEVICE, dtype)
    xs = inputs(dtype, channels_last)
    torch._dynamo.reset()
    with use_backend(name):
        want = train_steps(copy.deepcopy(model), xs)
        twin = copy.deepcopy(model)
        twin.forward = torch.compile(twin.forward, backend=compiler,
                                     fullgraph=True)
        got = train_steps(twin, xs)
    assert_same(got, want, dtype)
    return twin


@pytest.mark.parametrize('channels_last,dtype', [(False, torch.float64),
                                                 (True, torch.float32)])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('name', BACKENDS)
def test_aot_eager_equals_eager(name, mode, channels_last, dtype):
    """The operator's shape function and autograd formula as compiled
    graphs use them (fullgraph: BCN never breaks the graph)."""
    if name == 'cpu' and channels_last:
        name = 'auto'  # the CPU kernel serves NCHW; auto takes the op
    compiled_against_eager(name, mode, dtype, channels_last, 'aot_eager')


@pytest.mark.slow
@pytest.mark.parametrize('name,mode,channels_last,dtype', [
    (name, mode, False, torch.float64) for name in BACKENDS
    for mode in MODES
] + [('auto', 'estimate', True, torch.float32)])
def test_inductor_equals_eager(name, mode, channels_last, dtype):
    """inductor compiles the convolutions, activations and loss around
    BCN; BCN stays one operator with its own forward and backward, so
    micro-batch gradients are exact (a lowering of the reference's
    operations once made them 40-60 % off)."""
    compiled_against_eager(name, mode, dtype, channels_last, 'inductor')


def test_a_changing_rate_does_not_recompile():
    """The rate is a tensor input of the graph: one graph for every
    learning rate the schedule produces."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = Block('estimate').to(DEVICE, torch.float64)
    compiled = torch.compile(model, backend='aot_eager')
    for step in range(4):
        for layer in bcn_layers(model):
            layer.update_rate = 0.01 * (step + 1)
        compiled(inputs(torch.float64, False, 1)[0]).sum().backward()
    assert counters['stats']['unique_graphs'] == 1


@pytest.mark.skipif(not TRITON, reason='Triton is not installed')
def test_forced_triton_refuses_compiling():
    """Its kernels are not registered as an operator: a compiled graph is
    refused with the reason, never traced into."""
    model = Block('batch').to(DEVICE)
    compiled = torch.compile(model, backend='aot_eager')
    with use_backend('triton'), pytest.raises(Exception,
                                              match='torch.compile'):
        compiled(inputs(torch.float32, False, 1)[0])


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('name', BACKENDS)
def test_export_equals_eager(name, mode):
    """``torch.export``: BCN one operator, the statistics updates as buffer
    mutations of the exported program."""
    model = Block(mode).to(DEVICE, torch.float64)
    x = inputs(torch.float64, False, 1)[0]
    with use_backend(name):
        program = torch.export.export(copy.deepcopy(model), (x, ))
        exported = program.module()
        want = model(x)
        got = exported(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(exported.buffers(), model.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ops_in_graph = {str(node.target) for node in program.graph.nodes}
    assert any('mmbcn' in op for op in ops_in_graph), ops_in_graph


@pytest.mark.parametrize('mode', ['fixed', 'estimate'])
@pytest.mark.parametrize('name', BACKENDS)
def test_trace_equals_eager(name, mode):
    """``torch.jit.trace`` records the operator; the traced module moves
    its statistics as the eager one does."""
    model = Block(mode).to(DEVICE, torch.float64)
    xs = inputs(torch.float64, False, 2)
    with use_backend(name):
        traced = torch.jit.trace(copy.deepcopy(model), (xs[0], ),
                                 check_trace=False)
        with torch.no_grad():  # tracing ran one step: start again
            for a, b in zip(traced.buffers(), model.buffers()):
                a.copy_(b)
        for x in xs:
            torch.testing.assert_close(traced(x), model(x), rtol=1e-12,
                                       atol=1e-12)
    for a, b in zip(traced.buffers(), model.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def plain_bcn(x, layer, statistics=None):
    """BCN as ``F.batch_norm`` then ``F.group_norm`` with the per-group
    affine: the independent formulation a second derivative is checked
    against (PyTorch differentiates both twice)."""
    if statistics is None:  # batch statistics, differentiable
        x_dot = F.batch_norm(x, None, None, layer.batch_weight,
                             layer.batch_bias, True, 0.0, layer.eps)
    else:
        mean, var = statistics
        x_dot = F.batch_norm(x, mean, var, layer.batch_weight,
                             layer.batch_bias, False, 0.0, layer.eps)
    k = layer.num_features // layer.num_groups
    y = F.group_norm(x_dot, layer.num_groups, None, None, layer.eps)
    return y * layer.weight.repeat_interleave(k).view(1, -1, 1, 1) + \
        layer.bias.repeat_interleave(k).view(1, -1, 1, 1)


def gradient_penalty(norm, conv1, conv2, x):
    """The gradient of the squared norm of d out / d x with respect to
    the first convolution's weight (a WGAN-GP style penalty)."""
    x = x.clone().requires_grad_()
    out = conv2(torch.relu(norm(conv1(x))))
    (grad_x, ) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return torch.autograd.grad(grad_x.pow(2).sum(), conv1.weight)[0]


@pytest.mark.parametrize('mode', MODES)
def test_second_derivative_is_exact_in_the_python_backend(mode):
    torch.manual_seed(0)
    conv1 = nn.Conv2d(4, 8, 3, padding=1).to(DEVICE, torch.float64)
    conv2 = nn.Conv2d(8, 3, 3, padding=1).to(DEVICE, torch.float64)
    layer = randomize(BatchChannelNorm(8, 4, estimate=mode == 'estimate'))
    layer = layer.to(DEVICE, torch.float64).train(mode != 'fixed')
    layer.update_rate = 0.1 if mode == 'estimate' else None
    x = inputs(torch.float64, False, 1)[0][:, :4]
    statistics = None
    if mode != 'batch':
        statistics = (layer.running_mean.clone(), layer.running_var.clone())
        if mode == 'estimate':  # Algorithm 1 normalizes with the update
            probe = copy.deepcopy(layer)
            probe(conv1(x).detach())
            statistics = (probe.running_mean, probe.running_var)
    with use_backend('python'):
        got = gradient_penalty(layer, conv1, conv2, x)
    want = gradient_penalty(lambda t: plain_bcn(t, layer, statistics), conv1,
                            conv2, x)
    torch.testing.assert_close(got, want, rtol=1e-9,
                               atol=1e-9 * want.abs().max().item())


@pytest.mark.parametrize('mode', MODES)
def test_gradgradcheck_python_backend(mode):
    """``gradcheck`` and ``gradgradcheck`` of the op in float64, with the
    statistics restored before each evaluation (finite differences call
    it many times). Algorithm 1's estimates get no gradient by definition:
    at rate 0 they stay where they are, and finite differences see the
    same function."""
    layer = randomize(BatchChannelNorm(6, 3)).to(DEVICE, torch.float64)
    x = inputs(torch.float64, False, 1)[0][:, :6, :3, :3].clone()
    params = [layer.batch_weight, layer.batch_bias, layer.weight, layer.bias]
    inputs_ = [x.requires_grad_()] + [p.detach().requires_grad_()
                                      for p in params]
    buffers = [b.clone() for b in layer.buffers()]

    def fn(x, *params):
        running = [b.clone() for b in buffers]
        return ops.batch_channel_norm(
            x, *running, *params, 3, mode=mode,
            rate=0.0 if mode == 'estimate' else 0.3)

    with use_backend('python'):
        assert torch.autograd.gradcheck(fn, inputs_)
        assert torch.autograd.gradgradcheck(fn, inputs_)


@pytest.mark.parametrize('name', KERNELS)
def test_second_derivative_refused_by_the_kernels(name):
    """The kernels' backward passes are not differentiable: asking for a
    second derivative fails and names the backend that has one, instead
    of dropping BCN's part of it."""
    conv1 = nn.Conv2d(4, 8, 3, padding=1).to(DEVICE)
    conv2 = nn.Conv2d(8, 3, 3, padding=1).to(DEVICE)
    layer = BatchChannelNorm(8, 4).to(DEVICE)
    x = inputs(torch.float32, False, 1)[0][:, :4]
    with use_backend(name), pytest.raises(RuntimeError,
                                          match="'python' backend"):
        gradient_penalty(layer, conv1, conv2, x)


@pytest.mark.parametrize('dtype', [torch.int64, torch.uint8, torch.bool,
                                   torch.complex64])
@pytest.mark.parametrize('name', ['auto'] + SERVING)
def test_non_floating_input_is_refused(name, dtype):
    layer = BatchChannelNorm(8, 4).to(DEVICE)
    before = [b.clone() for b in layer.buffers()]
    x = torch.ones(2, 8, 3, 3, device=DEVICE).to(dtype)
    with use_backend(name), pytest.raises(TypeError,
                                          match=str(dtype).split('.')[-1]):
        layer(x)
    for a, b in zip(layer.buffers(), before):
        assert torch.equal(a, b)
