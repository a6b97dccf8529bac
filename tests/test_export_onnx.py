"""tools/deploy/export_onnx.py on the demo configs: a checkpoint with
non-trivial BCN statistics, folded, exported, run by onnxruntime on a
bundled image and compared with PyTorch; outputs that would replace inputs
are refused."""
import os.path as osp

import onnx
import pytest
import torch
from mmengine.config import Config

from mmbcn.ops import BatchChannelNorm
from mmbcn.utils import OutputPathError, build_model
from tool_runner import REPO, load_tool

DET = osp.join(REPO, 'configs', 'mask_rcnn',
               'mask-rcnn_r18_fpn_bcn-ws-all_demo.py')
SEG = osp.join(REPO, 'configs', 'deeplabv3',
               'deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-'
               '128x128_demo.py')


def random_checkpoint(config, path):
    """The config's model, initialised, with random BCN statistics and
    affines (so folding changes every convolution), saved as mmengine
    does (``{'state_dict': ...}``). Seeded: the same weights every run."""
    torch.manual_seed(0)
    model = build_model(Config.fromfile(config))
    model.init_weights()
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, BatchChannelNorm):
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            m.batch_weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.batch_bias.data.copy_(torch.randn(c, generator=gen) * 0.1)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen)
                                + 0.5)
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('config,data,what,outputs', [
    (SEG, 'voc_shapes', 'whole segmentor (logits)', 1),
    (DET, 'shapes_coco', 'backbone + neck + RPN head', 15),
])
@pytest.mark.slow
def test_export_matches_pytorch_on_a_bundled_image(
        tmp_path, config, data, what, outputs):
    ckpt = random_checkpoint(config, tmp_path / 'model.pth')
    out = tmp_path / 'model.onnx'
    root = tmp_path / data
    result = load_tool('deploy/export_onnx').main([
        config, ckpt, str(out), '--cfg-options',
        f'test_dataloader.dataset.data_root={root}/'
    ])
    assert result['exported'] == what and result['outputs'] == outputs
    assert result['image'].startswith(str(root))  # generated, then read
    assert result['onnx_max_rel'] <= 1e-4 and result['fold_max_rel'] <= 1e-4
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert 'Conv' in ops and not any('BCN' in op or 'bcn' in op
                                     for op in ops)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ['batch', '', 'height', 'width']


def test_outputs_that_are_inputs_are_refused(tmp_path):
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not read')
    before = ckpt.read_bytes()
    tool = load_tool('deploy/export_onnx')
    with pytest.raises(OutputPathError, match='must end in .onnx'):
        tool.main([SEG, str(ckpt), str(ckpt)])
    onnx_ckpt = tmp_path / 'model.onnx'
    onnx_ckpt.write_bytes(b'not read')
    with pytest.raises(OutputPathError, match='CHECKPOINT'):
        tool.main([SEG, str(onnx_ckpt), str(onnx_ckpt)])
    assert ckpt.read_bytes() == before
    assert onnx_ckpt.read_bytes() == b'not read'
