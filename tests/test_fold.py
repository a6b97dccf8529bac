"""Deploy-time folding of BCN (and WS) into convolutions: exact on single
layers, within float32 rounding on Mask R-CNN and DeepLabV3, and through
tools/deploy/fold_bcn.py to a config + checkpoint that load without
mmbcn's BCN or WS."""
import copy
import os.path as osp

import pytest
import torch
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.conv_ws import ConvWS2d
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.structures import InstanceData
from torch import nn

import mmbcn.models  # noqa: F401  (registers BCNASPPHead in mmseg)
from bcn_reference import randomize
from mmbcn.deploy import FoldReport, fold_bcn, folded_config
from mmbcn.ops import BatchChannelNorm, WSConv2d
from mmbcn.utils import build_model, scoped_build
from tool_runner import REPO, load_tool

D = torch.float64
MASK_RCNN_BCN_WS = osp.join(
    REPO, 'configs', 'mask_rcnn', 'mask-rcnn_r50_fpn_bcn-ws-all_2x_coco.py')


def bcn(c=8, g=4, seed=0, **kwargs):
    return randomize(BatchChannelNorm(c, g, **kwargs), seed).eval()


def relative_error(got, want):
    return ((got - want).abs().max() / want.abs().max()).item()


def folded_copy(model):
    model = copy.deepcopy(model).eval()
    return model, fold_bcn(model)


def realistic_statistics(model, run, seed=0):
    """BCN statistics measured on data (one eval pass, each layer set from
    its own input before it runs), then perturbed, with random affines:
    non-trivial but of the scale a trained model has."""
    gen = torch.Generator().manual_seed(seed)

    def measure(layer, args):
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        noise = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
        layer.running_mean.copy_(mean + 0.3 * var.sqrt() * noise)
        layer.running_var.copy_(
            var * (0.5 + torch.rand(var.shape, generator=gen,
                                    dtype=var.dtype)))

    layers = [m for m in model.modules() if isinstance(m, BatchChannelNorm)]
    with torch.no_grad():
        for layer in layers:
            for name in ('weight', 'batch_weight'):
                p = getattr(layer, name)
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            for name in ('bias', 'batch_bias'):
                p = getattr(layer, name)
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        handles = [m.register_forward_pre_hook(measure) for m in layers]
        model.eval()
        run(model)
        for handle in handles:
            handle.remove()
    return len(layers)


# ----------------------------------------------------------- single layers

CONVS = {
    'plain': lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False),
    'plain+bias': lambda: nn.Conv2d(3, 8, 3, padding=1),
    'ws-var': lambda: WSConv2d(3, 8, 3, padding=1, bias=False),
    'ws-std+bias': lambda: WSConv2d(3, 8, 3, padding=1, formula='std'),
    'grouped-dilated': lambda: WSConv2d(
        4, 8, 3, padding=2, dilation=2, groups=2, bias=False),
    'mmcv-ConvWS': lambda: ConvWS2d(3, 8, 3, padding=1, bias=False),
    'strided-1x1': lambda: WSConv2d(3, 8, 1, stride=2, bias=False),
}


@pytest.mark.parametrize('estimate', [False, True])
@pytest.mark.parametrize('kind', sorted(CONVS))
def test_conv_then_bcn_folds_exactly(kind, estimate):
    torch.manual_seed(0)
    conv = CONVS[kind]()
    model = nn.Sequential(conv, bcn(estimate=estimate), nn.ReLU()).to(D)
    x = torch.randn(2, conv.in_channels, 9, 9, dtype=D)
    folded, report = folded_copy(model)
    assert report.folded == [('0', '1')]
    assert report.complete and not report.standardized
    assert type(folded[0]) is nn.Conv2d and folded[0].bias is not None
    assert type(folded[1]) is nn.GroupNorm
    assert (folded[1].num_groups, folded[1].eps) == (4, 1e-5)
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-10,
                               atol=1e-10)


def test_conv1d_and_group_affine_expanded_per_channel():
    layer = bcn(6, 3)
    model = nn.Sequential(nn.Conv1d(2, 6, 3), layer).to(D).eval()
    folded, report = folded_copy(model)
    assert report.complete and type(folded[0]) is nn.Conv1d
    torch.testing.assert_close(folded[1].weight,
                               layer.weight.repeat_interleave(2).to(D))
    x = torch.randn(3, 2, 11, dtype=D)
    torch.testing.assert_close(folded(x), model(x))


def test_ws_conv_without_bcn_becomes_plain_conv():
    model = nn.Sequential(WSConv2d(3, 5, 3, formula='std'), nn.ReLU(),
                          WSConv2d(5, 4, 1, bias=False)).to(D).eval()
    folded, report = folded_copy(model)
    assert report.standardized == ['0', '2'] and report.complete
    assert type(folded[0]) is nn.Conv2d and type(folded[2]) is nn.Conv2d
    assert folded[2].bias is None
    x = torch.randn(2, 3, 6, 6, dtype=D)
    torch.testing.assert_close(folded(x), model(x))


def test_conv_module_folds_conv_then_norm_only():
    kwargs = dict(conv_cfg=dict(type='WSConv'),
                  norm_cfg=dict(type='BCN', num_groups=4))
    model = nn.Sequential(
        ConvModule(3, 8, 3, padding=1, **kwargs),
        ConvModule(8, 8, 3, padding=1, order=('norm', 'conv', 'act'),
                   **kwargs),
        ConvModule(8, 8, 1, order=('conv', 'act', 'norm'), **kwargs))
    for m in model.modules():
        if isinstance(m, BatchChannelNorm):
            randomize(m)
    model = model.to(D).eval()
    folded, report = folded_copy(model)
    assert report.folded == [('0.conv', '0.bcn')]
    assert report.standardized == ['1.conv', '2.conv']
    assert [p for p, _ in report.unfoldable] == ['1.bcn', '2.bcn']
    assert all('order' in why for _, why in report.unfoldable)
    assert isinstance(folded[0].norm, nn.GroupNorm)  # norm_name still valid
    assert isinstance(folded[1].norm, BatchChannelNorm)
    x = torch.randn(2, 3, 7, 7, dtype=D)
    torch.testing.assert_close(folded(x), model(x))


class TwoConsumers(nn.Module):
    """The conv's output feeds the BCN and a skip connection."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1, bias=False)
        self.norm = bcn()

    def forward(self, x):
        z = self.conv(x)
        return self.norm(z) + z


def test_unfoldable_places_are_reported_and_left_correct():
    shared = bcn(seed=3)
    hooked = nn.Conv2d(4, 8, 3, padding=1)
    hooked.register_forward_hook(lambda mod, inp, out: out * 2)
    model = nn.Sequential(
        TwoConsumers(),                                    # 0: two consumers
        nn.Sequential(nn.Conv2d(8, 4, 1), bcn(4, 2)),      # 1: foldable
        nn.Sequential(hooked, bcn(seed=4)),                # 2: hooked conv
        nn.Sequential(nn.Conv2d(8, 8, 1), shared,          # 3: shared BCN
                      nn.Conv2d(8, 8, 1), shared),
        nn.Sequential(nn.ConvTranspose2d(8, 8, 2), bcn(seed=5)),  # 4
        bcn(seed=6),                                       # 5: alone
    ).to(D).eval()
    x = torch.randn(2, 4, 5, 5, dtype=D)
    want = model(x)
    report = fold_bcn(model)
    assert isinstance(report, FoldReport)
    assert report.folded == [('1.0', '1.1')]
    reasons = dict(report.unfoldable)
    assert sorted(reasons) == ['0.norm', '2.1', '3.1', '4.1', '5']
    assert 'no convolution known' in reasons['0.norm']
    assert 'hooks' in reasons['2.1']
    assert 'shared' in reasons['3.1']
    assert 'transposed' in reasons['4.1']
    assert 'no convolution known' in reasons['5']
    assert '5 left unfolded' in str(report)
    torch.testing.assert_close(model(x), want)


def test_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), bcn()).train()
    with pytest.raises(RuntimeError, match='model.eval'):
        fold_bcn(model)


# ------------------------------------------------------------ real models

def mask_rcnn_outputs(model, x):
    """Backbone + neck, RPN head and RoI heads (on fixed proposals): every
    tensor the detector computes before its post-processing."""
    with torch.no_grad():
        feats = model.extract_feat(x)
        rpn = model.rpn_head(feats)
        proposals = InstanceData(bboxes=torch.tensor(
            [[0., 0., 60., 60.], [10., 20., 100., 90.],
             [64., 8., 127., 120.]], dtype=x.dtype))
        roi = model.roi_head.forward(feats, [proposals])
    return list(feats) + [t for level in rpn for t in level] + list(roi)


# float64 shows the folding exact on the whole model (<= 1e-12). float32 is
# what a deployment runs: folded and unfolded then differ by the model's own
# float32 rounding, which a random-weight R-50 amplifies to ~1e-4 and more
# (its float32 outputs differ from its float64 ones by as much), hence R-18
# with seeded weights there.
EXACT, DEPLOY = (torch.float64, 1e-10), (torch.float32, 1e-4)


@pytest.mark.parametrize('depth, dtype_tol', [(50, EXACT), (18, DEPLOY)])
@pytest.mark.slow
def test_mask_rcnn_fpn_bcn_ws_outputs_equal_after_folding(depth, dtype_tol):
    dtype, tol = dtype_tol
    cfg = Config.fromfile(MASK_RCNN_BCN_WS)  # BCN+WS, micro-batch BCN
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.depth = depth
    cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=20)
    if depth < 50:
        cfg.model.neck.in_channels = [64, 128, 256, 512]
    torch.manual_seed(0)
    model = build_model(cfg).to(dtype)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1),
                    dtype=dtype)
    layers = realistic_statistics(model, lambda m: mask_rcnn_outputs(m, x))
    want = mask_rcnn_outputs(model, x)
    folded, report = folded_copy(model)
    backbone = 53 if depth == 50 else 20
    assert report.complete and len(report.folded) == layers == backbone + 16
    assert not any(isinstance(m, (BatchChannelNorm, WSConv2d))
                   for m in folded.modules())
    block = folded.backbone.layer1[0]
    assert isinstance(block.norm1, nn.GroupNorm)  # norm1_name still valid
    assert isinstance(folded.backbone.layer2[0].downsample[1], nn.GroupNorm)
    assert isinstance(folded.backbone.norm1, nn.GroupNorm)
    got = mask_rcnn_outputs(folded, x)
    errors = [relative_error(g, w) for g, w in zip(got, want)]
    assert max(errors) < tol, errors
    if dtype == torch.float32:
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128),
                                             ori_shape=(128, 128),
                                             scale_factor=(1., 1.)))
        with torch.no_grad():
            folded.predict(x, [sample])  # the deploy path runs end to end


def deeplab_cfg(depth, channels=256):
    norm = dict(type='BCN', num_groups=32)
    conv = dict(type='WSConv', formula='std')
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(
            type='ResNet', depth=depth, num_stages=4,
            out_indices=(0, 1, 2, 3), strides=(1, 2, 2, 1),
            dilations=(1, 1, 1, 2), contract_dilation=True,
            style='pytorch', conv_cfg=conv, norm_cfg=norm, norm_eval=False),
        decode_head=dict(
            type='BCNASPPHead', in_channels=2048 if depth >= 50 else 512,
            in_index=3, channels=channels, dilations=(1, 6, 12, 18),
            num_classes=21, conv_cfg=conv, norm_cfg=norm,
            align_corners=True),
        test_cfg=dict(mode='whole'))


@pytest.mark.parametrize('depth, dtype_tol', [(50, EXACT), (18, DEPLOY)])
@pytest.mark.slow
def test_deeplabv3_bcn_ws_outputs_equal_after_folding(depth, dtype_tol):
    dtype, tol = dtype_tol
    torch.manual_seed(0)
    model = scoped_build(deeplab_cfg(depth), 'mmseg').to(dtype)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 97, 97, generator=gen, dtype=dtype)

    def run(m, x=x):
        with torch.no_grad():
            feats = m.extract_feat(x)
            return list(feats) + [m.decode_head(feats)]

    # statistics from 8 images: the pooled ASPP branch has one value per
    # image and channel
    calibration = torch.randn(8, 3, 65, 65, generator=gen, dtype=dtype)
    layers = realistic_statistics(model, lambda m: run(m, calibration))
    want = run(model)
    folded, report = folded_copy(model)
    backbone = 53 if depth == 50 else 20
    assert report.complete and len(report.folded) == layers == backbone + 6
    assert not any(isinstance(m, (BatchChannelNorm, WSConv2d))
                   for m in folded.modules())
    errors = [relative_error(g, w) for g, w in zip(run(folded), want)]
    assert max(errors) < tol, errors


# ------------------------------------------------------------------- tool

def small_deeplab_config(tmp_path):
    cfg = Config(dict(
        default_scope='mmseg',
        custom_imports=dict(imports=['mmbcn', 'mmbcn.models'],
                            allow_failed_imports=False),
        model=deeplab_cfg(18, channels=32),
        custom_hooks=[dict(type='BCNUpdateRateHook')]))
    path = str(tmp_path / 'deeplab_bcn.py')
    cfg.dump(path)
    return path


@pytest.mark.slow
def test_tool_writes_a_gn_config_and_weights_only_checkpoint(tmp_path):
    config = small_deeplab_config(tmp_path)
    torch.manual_seed(0)
    model = build_model(Config.fromfile(config))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 65, 65, generator=gen)
    calibration = torch.randn(8, 3, 65, 65, generator=gen)
    realistic_statistics(model, lambda m: m(calibration, mode='tensor'))
    ckpt = str(tmp_path / 'bcn.pth')
    torch.save(dict(state_dict={f'module.{k}': v
                                for k, v in model.state_dict().items()}),
               ckpt)
    out = str(tmp_path / 'out' / 'folded.pth')
    assert load_tool('deploy/fold_bcn').main(
        [config, ckpt, out, '--verify-shape', '2', '3', '65', '65']) == 0

    folded_cfg = Config.fromfile(str(tmp_path / 'out' / 'folded.py'))
    text = folded_cfg.pretty_text
    assert "type='BCN'" not in text and "type='WSConv'" not in text
    assert folded_cfg.model.backbone.norm_cfg.type == 'GN'
    assert folded_cfg.model.backbone.conv_cfg.type == 'FoldedConv'
    assert folded_cfg.custom_hooks == []
    assert 'mmbcn.deploy' in folded_cfg.custom_imports.imports
    ckpt_out = torch.load(out, weights_only=True)
    assert ckpt_out['meta']['mmbcn_fold']['folded'] == 20 + 6
    deployed = build_model(folded_cfg)
    deployed.load_state_dict(ckpt_out['state_dict'], strict=True)
    assert not any(isinstance(m, (BatchChannelNorm, WSConv2d))
                   for m in deployed.modules())
    with torch.no_grad():
        got = deployed.eval()(x, mode='tensor')
        want = model.eval()(x, mode='tensor')
    assert relative_error(got, want) < 1e-4


@MODELS.register_module(force=True)
class FoldTestNet(nn.Module):
    """A conv, a ReLU, then BCN: nothing to fold the BCN into."""

    def __init__(self):
        super().__init__()
        self.conv = WSConv2d(3, 8, 3)
        self.act = nn.ReLU()
        self.norm = BatchChannelNorm(8, 4)

    def forward(self, x, mode='tensor'):
        return self.norm(self.act(self.conv(x)))


def test_tool_refuses_a_partly_foldable_model(tmp_path, capsys):
    config = str(tmp_path / 'net.py')
    Config(dict(model=dict(type='FoldTestNet'))).dump(config)
    ckpt = str(tmp_path / 'net.pth')
    torch.save(FoldTestNet().state_dict(), ckpt)
    out = str(tmp_path / 'folded.pth')
    assert load_tool('deploy/fold_bcn').main([config, ckpt, out]) == 1
    assert not osp.exists(out)
    printed = capsys.readouterr()
    assert 'unfoldable: norm: no convolution known' in printed.out
    assert 'nothing written' in printed.err


def test_folded_config_changes():
    cfg = Config(dict(
        norm_cfg=dict(type='BCN', num_groups=16, estimate=True, eps=1e-4),
        model=dict(
            backbone=dict(norm_cfg=dict(type='SyncBCN', num_groups=8)),
            neck=dict(conv_cfg=dict(type='WSConv', formula='std'),
                      norm_cfg=dict(type='BCN', requires_grad=True)),
            head=dict(norm_cfg=dict(type='GN', num_groups=4))),
        custom_hooks=[dict(type='BCNUpdateRateHook'),
                      dict(type='EMAHook')]))
    new, changes = folded_config(cfg)
    assert new.norm_cfg == dict(type='GN', num_groups=16, eps=1e-4)
    assert new.model.backbone == dict(
        norm_cfg=dict(type='GN', num_groups=8),
        conv_cfg=dict(type='FoldedConv'))
    assert new.model.neck == dict(
        conv_cfg=dict(type='FoldedConv'),
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))
    assert new.model.head == cfg.model.head
    assert new.custom_hooks == [dict(type='EMAHook')]
    assert new.custom_imports.imports == ['mmbcn', 'mmbcn.deploy']
    assert len(changes) == 7
    conv = MODELS.build(dict(type='FoldedConv', in_channels=2,
                             out_channels=3, kernel_size=1, bias=False))
    assert type(conv) is nn.Conv2d and conv.bias is not None
