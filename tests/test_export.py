"""Exports of unfolded BCN+WS models in evaluation: each path gives a model
equal to eager PyTorch (relative error <= 1e-4) or refuses with the fix.
torch.jit.trace and torch.export record BCN as one operator
(mmbcn::bcn_cpu_forward); both ONNX exporters record the reference's
PyTorch operations, which ONNX knows; torch.jit.script refuses."""
import io

import pytest
import torch

import mmbcn  # noqa: F401
from mmbcn.cnn import BatchChannelNorm
from mmbcn.ops import BACKENDS

pytestmark = pytest.mark.slow


def resnet():
    """An mmdet ResNet-18 with BCN (micro-batch estimates moved by a few
    training steps) and WS, in evaluation."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = ResNet(depth=18, norm_cfg=dict(type='BCN', num_groups=8,
                                           estimate=True),
                   conv_cfg=dict(type='WSConv'), norm_eval=False)
    model.train()
    for m in model.modules():
        if isinstance(m, BatchChannelNorm):
            m.update_rate = 0.5
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.batch_bias.normal_(0, 0.2)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(1, 3, 64, 64))
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


def test_onnx_torchscript_exporter(model_and_input):
    pytest.importorskip('onnxruntime')
    model, x, want = model_and_input
    f = io.BytesIO()
    torch.onnx.export(model, (x, ), f, dynamo=False)
    assert b'mmbcn' not in f.getvalue()
    assert relative_error(_onnxruntime(f.getvalue(), x), want) <= 1e-4


def test_onnx_dynamo_exporter(model_and_input, tmp_path):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    model, x, want = model_and_input
    program = torch.onnx.export(model, (x, ), dynamo=True)
    path = tmp_path / 'model.onnx'
    program.save(str(path))
    assert relative_error(_onnxruntime(str(path), x), want) <= 1e-4


def test_jit_script_refuses_with_the_fix():
    with pytest.raises(RuntimeError, match='fold_bcn'):
        torch.jit.script(BatchChannelNorm(8, 4).eval())
