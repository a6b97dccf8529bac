"""Exports of unfolded BCN+WS models in evaluation: each path gives a model
equal to eager PyTorch (relative error <= 1e-4) or refuses with the fix.
torch.jit.trace and torch.export record BCN as one operator
(mmbcn::bcn_cpu_forward); both ONNX exporters record BatchNorm and
GroupNorm operations, which ONNX knows, and the files load in
onnxruntime: two BCN layers in a row, whole ResNet-18/50 backbones in
both modes with 8 and 32 groups, a Mask R-CNN mask head, at opsets 17
and 18; torch.jit.script refuses."""

import pytest
import torch

import mmbcn  # noqa: F401
from mmbcn.ops import BACKENDS, BatchChannelNorm
from mmbcn.utils import scoped_build

pytestmark = pytest.mark.slow


def resnet(depth=18, groups=8, estimate=True, randomize=True):
    """An mmdet ResNet with BCN (statistics moved by a few training steps)
    and WS, in evaluation. ``randomize=False`` keeps the initial affines,
    equal in every layer (what once made the TorchScript exporter write
    files onnxruntime refused)."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = ResNet(depth=depth, norm_cfg=dict(type='BCN', num_groups=groups,
                                              estimate=estimate),
                   conv_cfg=dict(type='WSConv'), norm_eval=False)
    model.train()
    for m in model.modules():
        if isinstance(m, BatchChannelNorm):
            m.update_rate = 0.5 if estimate else None
            if randomize:
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.batch_bias.normal_(0, 0.2)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 64, 64))
    model.eval()  # mmdet's ResNet.train() returns None
    return model


def relative_error(got, want):
    return max(float((g - w).abs().max() / w.abs().max())
               for g, w in zip(got, want))


@pytest.fixture(scope='module')
def model_and_input():
    model = resnet()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    return model, x, want


def test_jit_trace(model_and_input):
    model, x, want = model_and_input
    traced = torch.jit.trace(model, x, check_trace=False)
    if BACKENDS['cpu'].unavailable() is None:
        assert 'mmbcn::bcn_cpu_forward' in str(traced.inlined_graph)
    assert relative_error(traced(x), want) <= 1e-4


def test_torch_export(model_and_input):
    model, x, want = model_and_input
    program = torch.export.export(model, (x, ))
    assert relative_error(program.module()(x), want) <= 1e-4


def _onnxruntime(blob, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(blob)
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return [torch.from_numpy(o) for o in outputs]


def test_jit_script_refuses_with_the_fix():
    with pytest.raises(RuntimeError, match='fold_bcn'):
        torch.jit.script(BatchChannelNorm(8, 4).eval())


class TwoBCN(torch.nn.Sequential):
    """BCN -> ReLU -> BCN with their initial parameters."""

    def __init__(self, estimate):
        super().__init__(BatchChannelNorm(8, 4, estimate=estimate),
                         torch.nn.ReLU(),
                         BatchChannelNorm(8, 4, estimate=estimate))


def mask_head():
    """mmdet's FCNMaskHead (4 convs, BCN+WS as the gn-ws-all configs)."""
    from mmdet.registry import MODELS
    return scoped_build(
        dict(type='FCNMaskHead', num_convs=4, in_channels=32,
             conv_out_channels=32, num_classes=3,
             conv_cfg=dict(type='WSConv'),
             norm_cfg=dict(type='BCN', num_groups=8, estimate=True)),
        'mmdet', registry=MODELS)


CASES = {
    'two-bcn-estimate': (lambda: TwoBCN(True), (2, 8, 5, 5)),
    'two-bcn-batch': (lambda: TwoBCN(False), (2, 8, 5, 5)),
    'resnet18-estimate-8': (lambda: resnet(18, 8, True, False),
                            (1, 3, 64, 64)),
    'resnet18-batch-32': (lambda: resnet(18, 32, False), (1, 3, 64, 64)),
    'resnet50-estimate-32': (lambda: resnet(50, 32, True), (1, 3, 32, 32)),
    'resnet50-batch-8': (lambda: resnet(50, 8, False, False),
                         (1, 3, 32, 32)),
    'mask-head': (mask_head, (2, 32, 14, 14)),
}


def exact_outputs(model, x):
    """The model's outputs in float64: what both the float32 eager model
    and the float32 ONNX file approximate."""
    import copy
    with torch.no_grad():
        out = copy.deepcopy(model).double()(x.double())
    return list(out) if isinstance(out, (tuple, list)) else [out]


EXPORTERS = ('torchscript-17', 'torchscript-18', 'dynamo')


@pytest.mark.parametrize('case,exporter', [
    (case, exporter) for case in CASES for exporter in EXPORTERS
    # ResNet-50 (a minute per export by dynamo here): TorchScript only
    if not (case.startswith('resnet50') and exporter != 'torchscript-17')
])
def test_onnx_file_loads_and_matches(case, exporter, tmp_path):
    """onnxruntime loads the file and its outputs are as close to the
    exact (float64) values as eager float32 PyTorch's: relative error
    <= 1e-4."""
    pytest.importorskip('onnxruntime')
    build, shape = CASES[case]
    model = build()
    model.eval()  # (mmdet's ResNet.train() returns None)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    path = tmp_path / 'model.onnx'
    if exporter == 'dynamo':
        pytest.importorskip('onnxscript')
        torch.onnx.export(model, (x, ), dynamo=True).save(str(path))
    else:
        torch.onnx.export(model, (x, ), str(path), dynamo=False,
                          opset_version=int(exporter.split('-')[1]))
    import onnx
    domains = {n.domain for n in onnx.load(str(path)).graph.node}
    assert domains <= {'', 'ai.onnx'}, domains  # standard operators only
    exact = exact_outputs(model, x)
    assert relative_error(_onnxruntime(str(path), x), exact) <= 1e-4
