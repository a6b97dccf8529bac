"""Conversion of the authors' released BCN+WS checkpoints.

The authors' models are rebuilt here from the format of their released
files, independently of mmbcn's layers: a WS conv, BCN as a BatchNorm2d named
``pbn`` followed by a group normalization by reshaping with a per-group
(1, G, 1) affine, torchvision-style ResNet / ResNeXt bottlenecks, and the
DeepLabV3 ASPP head. Random weights with calibrated, then perturbed,
batch statistics are saved in the official format, converted, and the
mmdet / mmseg model must give the rebuild's outputs in eval mode.
"""
import hashlib
import os
import os.path as osp
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from mmbcn.models.official_checkpoint import (ARCHITECTURES,
                                              OfficialCheckpointError,
                                              convert_official_checkpoint,
                                              convert_state_dict,
                                              recognise_architecture,
                                              save_checkpoint)
from mmbcn.utils import scoped_build

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools', 'model_converters', 'official_bcn.py')
DEEPLAB_CONFIG = osp.join(
    REPO, 'configs', 'deeplabv3',
    'deeplabv3_r101-d8_bcn-ws-official_4xb4-voc12aug-513x513.py')
TOLERANCE = 1e-4
ARCH = {a.name: a for a in ARCHITECTURES}

# ---------------------------------------------------------------------------
# The authors' architectures, from the format facts.


class OfficialWSConv(nn.Conv2d):
    """'var': (W - mean) / sqrt(var_unbiased + 1e-5) (ImageNet models);
    'std': (W - mean) / (std_unbiased + 1e-5) (DeepLabV3); statistics per
    output channel over (in, kh, kw)."""

    def __init__(self, *args, formula, **kwargs):
        super().__init__(*args, bias=False, **kwargs)
        self.formula = formula

    def forward(self, x):
        flat = self.weight.reshape(self.weight.shape[0], -1)
        centred = flat - flat.mean(dim=1, keepdim=True)
        if self.formula == 'var':
            scale = torch.sqrt(flat.var(dim=1, keepdim=True) + 1e-5)
        else:
            scale = flat.std(dim=1, keepdim=True) + 1e-5
        weight = (centred / scale).view_as(self.weight)
        return F.conv2d(x, weight, None, self.stride, self.padding,
                        self.dilation, self.groups)


class OfficialBCN(nn.Module):
    """BatchNorm2d ``pbn``, then each sample's G groups normalized (biased
    variance, eps 1e-5), then the (1, G, 1) per-group affine."""

    def __init__(self, channels, groups=32):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(1, groups, 1))
        self.bias = nn.Parameter(torch.zeros(1, groups, 1))
        self.pbn = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.pbn(x).reshape(x.shape[0], self.groups, -1)
        mean = out.mean(dim=2, keepdim=True)
        var = ((out - mean)**2).mean(dim=2, keepdim=True)
        out = (out - mean) / torch.sqrt(var + 1e-5)
        return (self.weight * out + self.bias).view_as(x)


class Bottleneck(nn.Module):
    """torchvision's: stride (and groups, dilation) on the 3x3 conv."""

    def __init__(self, inplanes, planes, width, groups, stride, dilation,
                 downsample, conv, norm):
        super().__init__()
        self.conv1 = conv(inplanes, width, 1)
        self.bn1 = norm(width)
        self.conv2 = conv(
            width,
            width,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=groups)
        self.bn2 = norm(width)
        self.conv3 = conv(width, planes * 4, 1)
        self.bn3 = norm(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ASPP(nn.Module):
    """The authors' DeepLabV3 head ``aspp``."""

    def __init__(self, channels, depth, num_classes, conv, norm):
        super().__init__()
        self.aspp1 = conv(channels, depth, 1)
        for i, rate in ((2, 6), (3, 12), (4, 18)):
            setattr(self, f'aspp{i}',
                    conv(channels, depth, 3, padding=rate, dilation=rate))
        self.aspp5 = conv(channels, depth, 1)
        for i in range(1, 6):
            setattr(self, f'aspp{i}_bn', norm(depth))
        self.conv2 = conv(depth * 5, depth, 1)
        self.bn2 = norm(depth)
        self.conv3 = nn.Conv2d(depth, num_classes, 1)

    def forward(self, x):
        branches = [
            F.relu(getattr(self, f'aspp{i}_bn')(getattr(self, f'aspp{i}')(x)))
            for i in range(1, 5)
        ]
        pooled = F.relu(self.aspp5_bn(self.aspp5(F.adaptive_avg_pool2d(x, 1))))
        branches.append(
            F.interpolate(
                pooled, x.shape[2:], mode='bilinear', align_corners=True))
        out = F.relu(self.bn2(self.conv2(torch.cat(branches, 1))))
        return self.conv3(out)


class OfficialResNet(nn.Module):
    """ResNet / ResNeXt (ImageNet: ``fc``) or DeepLabV3 (``aspp``: layer3
    stride 2, layer4 stride 1 at dilation 2, its first block at 1).
    ``forward`` returns the four stage outputs and the head's output."""

    def __init__(self,
                 blocks,
                 groups=1,
                 width_per_group=64,
                 formula='var',
                 deeplab=False,
                 conv=None,
                 norm=OfficialBCN):
        super().__init__()
        conv = conv or partial(OfficialWSConv, formula=formula)
        self.conv1 = conv(3, 64, 7, stride=2, padding=3)
        self.bn1 = norm(64)
        inplanes = 64
        strides = (1, 2, 2, 1) if deeplab else (1, 2, 2, 2)
        dilations = (1, 1, 1, 2) if deeplab else (1, 1, 1, 1)
        for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
            width = planes * width_per_group // 64 * groups
            stride, dilation = strides[i], dilations[i]
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    conv(inplanes, planes * 4, 1, stride=stride),
                    norm(planes * 4))
            layers = [
                Bottleneck(inplanes, planes, width, groups, stride,
                           max(1, dilation // 2), downsample, conv, norm)
            ]
            layers += [
                Bottleneck(planes * 4, planes, width, groups, 1, dilation,
                           None, conv, norm) for _ in range(1, n)
            ]
            setattr(self, f'layer{i + 1}', nn.Sequential(*layers))
            inplanes = planes * 4
        if deeplab:
            self.aspp = ASPP(2048, 256, 21, conv, norm)
        else:
            self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.max_pool2d(out, 3, stride=2, padding=1)
        stages = []
        for i in range(1, 5):
            out = getattr(self, f'layer{i}')(out)
            stages.append(out)
        if hasattr(self, 'aspp'):
            head = F.interpolate(
                self.aspp(out),
                x.shape[2:],
                mode='bilinear',
                align_corners=True)
        else:
            head = self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        return stages, head


def randomized(model, size):
    """Random weights; batch statistics set from a training-mode pass on
    two ``size`` x ``size`` images (momentum 1), then perturbed so that they
    differ per channel from the test input's own statistics. Returns the
    model in eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, OfficialBCN):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.3, generator=gen)
                m.pbn.weight.uniform_(0.5, 1.5, generator=gen)
                m.pbn.bias.normal_(0, 0.5, generator=gen)
                m.pbn.momentum = 1.0
            elif isinstance(m, OfficialWSConv):
                # per-channel scales of trained weights: here the two WS
                # formulas differ by up to 1e-5 / (2 std^2) = 20%
                scale = torch.empty(m.weight.shape[0], 1, 1, 1)
                m.weight.normal_(generator=gen).mul_(
                    scale.uniform_(0.005, 0.1, generator=gen))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, 0.1, generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=gen)
        model.train()(torch.randn(2, 3, size, size, generator=gen))
        for m in model.modules():
            if isinstance(m, OfficialBCN):
                std = m.pbn.running_var.sqrt()
                m.pbn.running_mean.add_(std *
                                        torch.randn(std.shape, generator=gen))
                m.pbn.running_var.mul_(
                    torch.empty_like(std).uniform_(0.3, 3, generator=gen))
                m.pbn.num_batches_tracked.fill_(1000)
    return model.eval()


def official_file(model, path, wrapped=True, legacy=False):
    """Save as the authors did: keys prefixed ``module.``; inside
    ``{'state_dict', 'epoch', 'best_acc', 'optimizer'}`` or bare."""
    state = {'module.' + k: v for k, v in model.state_dict().items()}
    if wrapped:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        state = dict(
            epoch=90,
            state_dict=state,
            best_acc=76.9,
            optimizer=optimizer.state_dict())
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def loaded(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_nothing_written(folder, dst):
    assert not osp.exists(dst)
    assert os.listdir(folder) == []


# ---------------------------------------------------------------------------
# Fixtures: official files (R-50 in the legacy serialization of 2019-era
# PyTorch, the others in the zip format).


@pytest.fixture(scope='module')
def r50(tmp_path_factory):
    folder = tmp_path_factory.mktemp('r50')
    model = randomized(OfficialResNet((3, 4, 6, 3)), 32)
    return model, official_file(model, folder / 'rn50_bcn_ws.pth', legacy=True)


@pytest.fixture(scope='module')
def r50_converted(r50, tmp_path_factory):
    """R-50 converted by the command-line tool."""
    dst = tmp_path_factory.mktemp('r50_out') / 'r50_bcn-ws_imagenet.pth'
    result = subprocess.run(
        [sys.executable, TOOL, r50[1], str(dst)],
        cwd=REPO,
        capture_output=True,
        text=True)
    assert result.returncode == 0, result.stderr
    return str(dst), result.stdout


# ---------------------------------------------------------------------------
# ImageNet backbones.


def mmdet_backbone(cfg):
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS
    return scoped_build(dict(cfg, out_indices=(0, 1, 2, 3)), 'mmdet', MODELS)


def mmseg_backbone(cfg):
    from mmseg.registry import MODELS
    return scoped_build(dict(cfg, out_indices=(0, 1, 2, 3)), 'mmseg', MODELS)


def assert_backbone_exact(official, dst, cfg, name):
    """Strict load into mmdet's and mmseg's backbone, through init_cfg
    Pretrained as well, and the same stage outputs as the authors'."""
    backbone = mmdet_backbone(
        dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=dst)))
    backbone.init_weights()
    state = loaded(dst)['state_dict']
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    backbone.load_state_dict(state, strict=True)
    mmseg_backbone(cfg).load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    backbone.eval()  # mmdet's ResNet.train() returns None
    with torch.no_grad():
        expected, _ = official(x)
        actual = backbone(x)
    errors = [relative_error(a, e) for a, e in zip(actual, expected)]
    print(f'\n{name}: max relative error per stage {errors}')
    assert max(errors) < TOLERANCE


@pytest.mark.slow
def test_resnet50_cli_conversion_is_exact(r50, r50_converted):
    official, src = r50
    dst, stdout = r50_converted
    for stage in range(1, 6):
        assert f'[{stage}/5]' in stdout
    assert 'recognised ResNet-50' in stdout
    assert '2 classifier keys dropped' in stdout
    checkpoint = loaded(dst)
    assert set(checkpoint) == {'state_dict', 'meta'}
    meta = checkpoint['meta']
    assert meta['architecture'] == 'ResNet-50'
    assert meta['source'] == 'rn50_bcn_ws.pth'
    with open(src, 'rb') as f:
        assert meta['source_sha256'] == hashlib.sha256(f.read()).hexdigest()
    state = checkpoint['state_dict']
    assert not any(k.startswith(('fc.', 'module.')) for k in state)
    assert state['bcn1.weight'].shape == (32, )
    torch.testing.assert_close(state['bcn1.weight'],
                               official.bn1.weight.reshape(-1))
    torch.testing.assert_close(state['layer1.0.downsample.1.batch_bias'],
                               official.layer1[0].downsample[1].pbn.bias)
    assert_backbone_exact(official, dst, ARCH['ResNet-50'].model, 'ResNet-50')


@pytest.mark.slow
def test_resnext50_conversion_is_exact(tmp_path):
    """A bare state dict (no ``state_dict`` wrapper)."""
    official = randomized(
        OfficialResNet((3, 4, 6, 3), groups=32, width_per_group=4), 32)
    src = official_file(official, tmp_path / 'rx50_bcn_ws.pth', wrapped=False)
    dst = str(tmp_path / 'checkpoints' / 'x50-32x4d_bcn-ws_imagenet.pth')
    lines = []
    meta = convert_official_checkpoint(src, dst, log=lines.append)
    assert meta['architecture'] == 'ResNeXt-50 32x4d'
    assert len(lines) == 6 and lines[-1] == f'[5/5] wrote {dst}'
    cfg = dict(
        type='ResNeXt',
        depth=50,
        groups=32,
        base_width=4,
        style='pytorch',
        conv_cfg=dict(type='WSConv'),
        norm_cfg=dict(type='BCN', num_groups=32))
    assert_backbone_exact(official, dst, cfg, 'ResNeXt-50 32x4d')


def test_resnet101_is_recognised_without_num_batches_tracked():
    """Older PyTorch saved no ``num_batches_tracked``: written as 0."""
    official = OfficialResNet((3, 4, 23, 3))
    state = {
        k: v
        for k, v in official.state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    arch = recognise_architecture(state)
    assert arch.name == 'ResNet-101'
    converted, report = convert_state_dict(state, arch)
    assert report['filled'] == 104 and len(report['dropped']) == 2
    assert converted['layer3.22.bcn3.num_batches_tracked'] == 0
    mmdet_backbone(arch.model).load_state_dict(converted, strict=True)


# ---------------------------------------------------------------------------
# DeepLabV3 (the whole segmentor, through the shipped config).


@pytest.fixture(scope='module')
def deeplab(tmp_path_factory):
    folder = tmp_path_factory.mktemp('deeplab')
    official = randomized(
        OfficialResNet((3, 4, 23, 3), formula='std', deeplab=True), 33)
    src = official_file(
        official, folder / 'deeplab_resnet101_pascal_v3_gn_ws_lr7e-3_'
        'epoch50.pth')
    dst = str(folder / 'deeplabv3_r101_bcn-ws_voc12aug_official.pth')
    convert_official_checkpoint(src, dst, log=lambda line: None)
    cfg = Config.fromfile(DEEPLAB_CONFIG)
    from mmseg.registry import MODELS
    segmentor = scoped_build(cfg.model, 'mmseg', MODELS)
    segmentor.load_state_dict(loaded(dst)['state_dict'], strict=True)
    return official, segmentor.eval(), loaded(dst)['meta']


@pytest.mark.slow
def test_deeplabv3_conversion_is_exact(deeplab):
    official, segmentor, meta = deeplab
    assert meta['architecture'] == 'DeepLabV3-R101 (PASCAL VOC)'
    assert meta['dataset_meta']['classes'][0] == 'background'
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(2))
    shape = dict(img_shape=(65, 65), pad_shape=(65, 65), ori_shape=(65, 65))
    with torch.no_grad():
        stages, expected = official(x)
        features = segmentor.extract_feat(x)
        actual = segmentor.encode_decode(x, [shape])
    errors = [relative_error(a, e) for a, e in zip(features, stages)]
    logits_error = relative_error(actual, expected)
    print(f'\nDeepLabV3-R101: max relative error per stage {errors}, '
          f'logits {logits_error}')
    assert actual.shape == (1, 21, 65, 65)
    assert max(errors) < TOLERANCE and logits_error < TOLERANCE


@pytest.mark.slow
def test_deeplabv3_config_evaluates_as_the_authors(deeplab):
    """The config's test path: the image at its own size, normalized, padded
    with zeros bottom-right (to 513x513 in the config, 97x97 here for
    speed), the logits cropped back; as the authors' ``preprocess(...,
    crop=(513, 513))`` then argmax over the unpadded part."""
    official, segmentor, _ = deeplab
    segmentor.data_preprocessor.test_cfg = dict(size=(97, 97))
    gen = torch.Generator().manual_seed(3)
    bgr = torch.randint(0, 256, (3, 37, 50), generator=gen, dtype=torch.uint8)
    from mmseg.structures import SegDataSample
    sample = SegDataSample(
        metainfo=dict(img_shape=(37, 50), ori_shape=(37, 50)))
    with torch.no_grad():
        result = segmentor.test_step(
            dict(inputs=[bgr], data_samples=[sample]))[0]
        rgb = bgr.flip(0).float() / 255
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        padded = F.pad((rgb - mean) / std, (0, 97 - 50, 0, 97 - 37))
        _, logits = official(padded[None])
    expected = logits[0, :, :37, :50]
    error = relative_error(result.seg_logits.data, expected)
    print(f'\nDeepLabV3-R101 through test_step (padded to 97x97): {error}')
    assert error < TOLERANCE
    assert torch.equal(result.pred_sem_seg.data[0], expected.argmax(0))


def test_deeplabv3_config():
    cfg = Config.fromfile(DEEPLAB_CONFIG)
    assert cfg.custom_imports == dict(
        imports=['mmbcn', 'mmbcn.models'], allow_failed_imports=False)
    assert cfg.load_from == (
        'checkpoints/deeplabv3_r101_bcn-ws_voc12aug_official.pth')
    backbone = cfg.model.backbone
    assert backbone.type == 'ResNet' and backbone.depth == 101
    assert backbone.strides == (1, 2, 2, 1)
    assert backbone.dilations == (1, 1, 1, 2)
    assert backbone.contract_dilation and backbone.style == 'pytorch'
    assert backbone.conv_cfg == dict(type='WSConv', formula='std')
    assert backbone.norm_cfg == dict(type='BCN', num_groups=32)
    assert cfg.model.decode_head.type == 'BCNASPPHead'
    assert cfg.model.auxiliary_head is None
    assert cfg.model.data_preprocessor.test_cfg == dict(size=(513, 513))
    assert cfg.model.test_cfg.mode == 'whole'
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        transforms = [t.type for t in loader.dataset.pipeline]
        assert transforms == [
            'LoadImageFromFile', 'LoadAnnotations', 'PackSegInputs'
        ]
        assert loader.dataset.ann_file == 'ImageSets/Segmentation/val.txt'
        assert loader.batch_size == 1


# ---------------------------------------------------------------------------
# Bad input: a clear error, nothing at DST.


def torchvision_style(tmp_path, norm):
    model = OfficialResNet((3, 4, 6, 3),
                           conv=partial(nn.Conv2d, bias=False),
                           norm=norm)
    return official_file(model, tmp_path / 'resnet50.pth', wrapped=False)


def edited_r50(tmp_path, r50, edit):
    state = dict(loaded(r50[1])['state_dict'])
    edit(state)
    path = tmp_path / 'edited.pth'
    torch.save(dict(state_dict=state), path)
    return str(path)


def truncated(tmp_path, r50):
    with open(r50[1], 'rb') as f:
        data = f.read()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:len(data) // 2])
    return str(path)


def text_file(tmp_path, r50):
    path = tmp_path / 'notes.pth'
    path.write_text('not a checkpoint\n')
    return str(path)


def add_keys(state):
    state['module.layer1.0.se.fc1.weight'] = torch.zeros(4, 256)
    state['module.bn1.pbn.extra'] = torch.zeros(64)


def reshape_key(state):
    state['module.layer2.0.conv1.weight'] = torch.zeros(128, 255, 1, 1)


def drop_key(state):
    del state['module.layer3.2.bn2.pbn.running_var']


BAD_INPUTS = {
    'truncated': (truncated, ['not a readable PyTorch checkpoint']),
    'text file': (text_file, ['not a readable PyTorch checkpoint']),
    'torchvision ResNet':
    (lambda tmp, _: torchvision_style(tmp, nn.BatchNorm2d),
     ['not an official BCN+WS checkpoint', 'BatchNorm', 'torchvision']),
    'GN checkpoint':
    (lambda tmp, _: torchvision_style(tmp, partial(nn.GroupNorm, 32)),
     ['not an official BCN+WS checkpoint', 'GroupNorm', '(64,)']),
    'unmapped keys': (lambda tmp, r50: edited_r50(tmp, r50, add_keys), [
        '2 source key(s) could not be mapped', 'layer1.0.se.fc1.weight',
        'bn1.pbn.extra'
    ]),
    'shape mismatch': (lambda tmp, r50: edited_r50(tmp, r50, reshape_key), [
        'layer2.0.conv1.weight -> layer2.0.conv1.weight',
        'checkpoint (128, 255, 1, 1)', 'model (128, 256, 1, 1)'
    ]),
    'missing key': (lambda tmp, r50: edited_r50(tmp, r50, drop_key),
                    ['lacks 1 key(s)', 'layer3.2.bcn2.running_var']),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_refused(case, r50, tmp_path):
    make, phrases = BAD_INPUTS[case]
    src = make(tmp_path, r50)
    out = tmp_path / 'out'
    out.mkdir()
    dst = str(out / 'converted.pth')
    with pytest.raises(OfficialCheckpointError) as error:
        convert_official_checkpoint(src, dst, log=lambda line: None)
    for phrase in phrases:
        assert phrase in str(error.value)
    assert_nothing_written(out, dst)


def test_unknown_bcn_architecture_is_named():
    state = OfficialResNet((3, 4, 6, 3)).state_dict()
    del state['fc.weight'], state['fc.bias']
    with pytest.raises(
            OfficialCheckpointError,
            match=r"architecture not recognised: found BCN layers "
            r"with blocks per stage \(3, 4, 6, 3\), 3x3 conv "
            r"groups 1, head 'none'"):
        recognise_architecture(state)


def test_cli_reports_errors(tmp_path, capsys):
    sys.path.insert(0, osp.dirname(TOOL))
    try:
        import official_bcn
    finally:
        sys.path.pop(0)
    src = tmp_path / 'notes.pth'
    src.write_text('not a checkpoint\n')
    out = tmp_path / 'out'
    out.mkdir()
    dst = str(out / 'x.pth')
    assert official_bcn.main([str(src), dst]) == 1
    assert 'error: ' in capsys.readouterr().err
    assert_nothing_written(out, dst)


def test_failed_write_leaves_nothing(tmp_path):
    dst = str(tmp_path / 'x.pth')
    with pytest.raises(Exception):
        save_checkpoint(dict(state_dict={}, meta=dict(bad=lambda: None)), dst)
    assert_nothing_written(tmp_path, dst)
