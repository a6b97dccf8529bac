"""BCN and WSConv built by mmcv's builders from the mmdet and mmseg scopes,
inside real mmdet/mmseg/mmcv modules."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmengine.registry import DefaultScope

import mmbcn  # noqa: F401
from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d
from mmbcn.utils import scoped_build


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_build_in_downstream_scopes(scope):
    with DefaultScope.overwrite_default_scope(scope):
        name, bcn = build_norm_layer(
            dict(type='BCN', num_groups=8, estimate=True), 64, postfix=2)
        _, sync = build_norm_layer(dict(type='SyncBCN', num_groups=8), 64)
        conv = build_conv_layer(dict(type='WSConv', formula='std'), 3, 64, 3)
    assert name == 'bcn2' and isinstance(bcn, BatchChannelNorm)
    assert bcn.estimate and bcn.num_groups == 8 and bcn.eps == 1e-5
    assert isinstance(sync, SyncBatchChannelNorm)
    assert isinstance(conv, WSConv2d) and conv.formula == 'std'


def test_requires_grad_false_freezes_all_parameters():
    _, bcn = build_norm_layer(dict(type='BCN', requires_grad=False), 64)
    assert not any(p.requires_grad for p in bcn.parameters())


def test_custom_imports_registers(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['mmbcn'], allow_failed_imports=False)
        norm_cfg = dict(type='BCN', num_groups=4)
        conv_cfg = dict(type='WSConv')
    """))
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmcv.cnn import build_conv_layer, build_norm_layer
        cfg = Config.fromfile({str(cfg)!r})
        name, layer = build_norm_layer(cfg.norm_cfg, 8)
        conv = build_conv_layer(cfg.conv_cfg, 3, 8, 3)
        print(name, type(layer).__name__, type(conv).__name__)
    """)
    out = subprocess.run([sys.executable, '-c', script], check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ['bcn', 'BatchChannelNorm', 'WSConv2d']


def test_conv_module_forward_backward():
    module = ConvModule(8, 32, 3, padding=1, conv_cfg=dict(type='WSConv'),
                        norm_cfg=dict(type='BCN', num_groups=8))
    assert module.conv.bias is None  # bias='auto' drops it before a norm
    assert module.norm_name == 'bcn'
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    module(x).pow(2).mean().backward()
    assert x.grad is not None and module.norm.weight.grad is not None
    assert module.conv.weight.grad is not None


@pytest.mark.parametrize('estimate', [False, True])
def test_mmdet_resnet_with_bcn_ws(estimate):
    from mmdet.registry import MODELS
    resnet = scoped_build(
        dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
             norm_eval=True, style='pytorch', zero_init_residual=True,
             conv_cfg=dict(type='WSConv'),
             norm_cfg=dict(type='BCN', num_groups=16, estimate=estimate)),
        'mmdet', MODELS)
    resnet.init_weights()
    resnet.train()
    bcns = [m for m in resnet.modules() if isinstance(m, BatchChannelNorm)]
    assert len(bcns) == 20 and all(m.training for m in bcns)  # norm_eval
    assert all(isinstance(m, WSConv2d) for m in resnet.modules()
               if isinstance(m, torch.nn.Conv2d))
    # zero_init_residual zeroes the group step's affine of each last norm
    assert torch.equal(resnet.layer1[0].bcn2.weight, torch.zeros(16))
    for m in bcns:
        m.update_rate = 0.02 if estimate else None
    x = torch.randn(1 if estimate else 2, 3, 64, 64)
    outs = resnet(x)
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    sum(o.mean() for o in outs).backward()
    assert resnet.conv1.weight.grad is not None
    assert not torch.equal(resnet.bcn1.running_mean, torch.zeros(64))


def test_mmseg_resnet_builds_with_syncbcn():
    from mmseg.registry import MODELS
    resnet = scoped_build(
        dict(type='ResNetV1c', depth=18, strides=(1, 2, 1, 1),
             dilations=(1, 1, 2, 4), conv_cfg=dict(type='WSConv'),
             norm_cfg=dict(type='SyncBCN', num_groups=8)), 'mmseg', MODELS)
    outs = resnet(torch.randn(2, 3, 32, 32))
    assert outs[-1].shape == (2, 512, 4, 4)  # stem /4, one stride 2
