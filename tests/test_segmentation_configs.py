"""The DeepLabV3 PASCAL VOC configs: each builds its full model and runs on
one small image; the paper's settings (Sec. 4.3) are what the loaded
configs hold. What holds for every config (norms and WS as the file name
says, custom_imports, hooks) is in tests/test_config_invariants.py."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import mmbcn  # noqa: F401
from mmbcn.models.official_checkpoint import ARCHITECTURES, target_state_shapes
from mmbcn.ops import BatchChannelNorm, WSConv2d
from mmbcn.utils import scoped_build
from tool_runner import REPO

HERE = osp.join(REPO, 'configs', 'deeplabv3')
RECIPE = 'deeplabv3_r101b-d16-mg111_{}4xb4-30k_voc12aug-513x513.py'
PAPER = {
    'BN': osp.join(HERE, RECIPE.format('')),
    'GN+WS': osp.join(HERE, RECIPE.format('gn-ws_')),
    'BCN+WS': osp.join(HERE, RECIPE.format('syncbcn-ws_')),
}
DEMOS = sorted(glob.glob(osp.join(HERE, '*_demo.py')))
# the authors' converted model has its own tests
CONFIGS = sorted(PAPER.values()) + DEMOS


def build(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no weights in tests
    model = scoped_build(cfg.model, cfg.default_scope, MODELS)
    model.init_weights()
    return cfg, model


def batch(sizes, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for h, w in sizes:
        inputs.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
@pytest.mark.slow
def test_config_builds_and_predicts_and_trains(path):
    cfg, model = build(path)
    num_classes = cfg.model.decode_head.num_classes
    model.eval()
    with torch.no_grad():
        [result] = model.test_step(batch([(70, 90)], num_classes))
    assert result.pred_sem_seg.data.shape == (1, 70, 90)
    assert result.seg_logits.data.shape == (num_classes, 70, 90)
    assert int(result.pred_sem_seg.data.max()) < num_classes
    # one training forward/backward on two small images (no 513 padding)
    model.train()
    model.data_preprocessor.size = (65, 65)
    data = model.data_preprocessor(batch([(65, 65)] * 2, num_classes), True)
    losses = model(**data, mode='loss')
    assert set(losses) >= {'decode.loss_ce', 'aux.loss_ce'}
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    bcn = [m for m in model.modules() if isinstance(m, BatchChannelNorm)]
    for m in bcn:  # large-batch mode: batch statistics, running averages
        assert not m.estimate and int(m.num_batches_tracked) == 1
        assert m.batch_weight.grad is not None and m.weight.grad is not None


@pytest.mark.slow
@pytest.mark.parametrize('norm', sorted(PAPER))
def test_normalization_and_weight_standardization(norm):
    """The paper's layers in the backbone and both heads: norms with its
    group count, WS convolutions with its formula, its ImageNet weights
    (which norm, and that every normalized conv of a part given a conv_cfg
    is WS: tests/test_config_invariants.py)."""
    cfg, model = build(PAPER[norm])
    for part in (model.backbone, model.decode_head, model.auxiliary_head):
        norms = [m for m in part.modules()
                 if isinstance(m, (nn.modules.batchnorm._NormBase,
                                   nn.GroupNorm, BatchChannelNorm))]
        assert norms
        if norm != 'BN':
            assert all(m.num_groups == 32 for m in norms)
            assert any(isinstance(m, WSConv2d) for m in part.modules())
    assert not model.backbone.norm_eval
    if norm == 'GN+WS':  # the jhu ImageNet weights use the 'std' formula
        assert model.backbone.conv1.formula == 'std'
    if norm == 'BCN+WS':
        assert model.backbone.conv1.formula == 'var'
    init = Config.fromfile(PAPER[norm]).model.backbone.init_cfg
    assert init == dict(type='Pretrained', checkpoint={
        'BN': 'torchvision://resnet101',
        'GN+WS': 'open-mmlab://jhu/resnet101_gn_ws',
        'BCN+WS': 'checkpoints/r101_bcn-ws_imagenet.pth'
    }[norm])


@pytest.mark.slow
def test_bcn_backbone_takes_the_converted_imagenet_weights():
    """Every key and shape of the authors' ResNet-101 BCN+WS, as
    tools/model_converters/official_bcn.py writes it, is in the backbone."""
    _, model = build(PAPER['BCN+WS'])
    [arch] = [a for a in ARCHITECTURES if a.name == 'ResNet-101']
    converted = target_state_shapes(arch)
    ours = {k: v.shape for k, v in model.backbone.state_dict().items()}
    assert ours == converted


@pytest.mark.slow
def test_output_stride_16_and_aspp_rates():
    cfg, model = build(PAPER['BCN+WS'])
    backbone = model.backbone
    backbone.eval()
    assert backbone.depth == 101 and len(backbone.layer3) == 23
    assert backbone.conv1.kernel_size == (7, 7)  # torchvision-style stem
    # multi-grid (1, 1, 1): layer4 at rate 2, its first block contracted
    assert [b.conv2.dilation for b in backbone.layer4] == [(1, 1), (2, 2),
                                                           (2, 2)]
    assert all(b.conv2.dilation == (1, 1) for b in backbone.layer3)
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4]
    rates = [m.conv.dilation[0] for m in model.decode_head.aspp_modules]
    assert rates == [1, 6, 12, 18]
    assert model.decode_head.aspp_modules[0].conv.kernel_size == (1, 1)


@pytest.mark.parametrize('norm', sorted(PAPER))
def test_training_recipe_of_sec_4_3(norm):
    cfg = Config.fromfile(PAPER[norm])
    assert cfg.train_dataloader.batch_size == 4  # x 4 GPUs = 16
    assert cfg.model.data_preprocessor.size == (513, 513)
    train_sets = cfg.train_dataloader.dataset.datasets
    assert [(d.ann_file, d.data_prefix.seg_map_path) for d in train_sets] == [
        ('ImageSets/Segmentation/train.txt', 'SegmentationClass'),
        ('ImageSets/Segmentation/aug.txt', 'SegmentationClassAug')
    ]  # 1,464 + 9,118 = 10,582 images
    for d in train_sets:
        steps = {t.type: t for t in d.pipeline}
        assert steps['RandomCrop'].crop_size == (513, 513)
        assert steps['Pad'].size == (513, 513)
        assert 'CheckSegMapSize' in steps
    val = cfg.val_dataloader.dataset
    assert val.ann_file == 'ImageSets/Segmentation/val.txt'  # 1,449
    assert cfg.test_dataloader.dataset.pipeline == val.pipeline
    kinds = [t.type for t in val.pipeline]
    assert kinds == ['LoadImageFromFile', 'Resize', 'LoadAnnotations',
                     'CheckSegMapSize', 'PackSegInputs']  # single scale
    # the authors' geometry: sides of 16k + 1 pixels, align_corners=True,
    # in training and testing (tests/test_segmentation_alignment.py)
    assert cfg.model.decode_head.align_corners
    assert cfg.model.auxiliary_head.align_corners
    assert cfg.model.data_preprocessor.test_cfg == dict(size=(513, 513))
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(513, 513),
                                      stride=(342, 342))
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum) == ('SGD',
                                                                  0.007, 0.9)
    [poly] = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9,
                                                               0.0, 30000)
    assert cfg.train_cfg.max_iters == 30000
    assert cfg.val_evaluator.type == 'IoUMetric'


def test_demo_configs_are_the_paper_network_from_scratch():
    """The demos shrink the paper's network (depth, width, crop and
    classes are theirs) but keep its shape, and train from scratch."""
    for path in DEMOS:
        cfg = Config.fromfile(path)
        assert cfg.model.backbone.init_cfg is None
        # the paper's network shape: output stride 16, ASPP 6/12/18
        assert cfg.model.backbone.strides == (1, 2, 2, 1)
        assert cfg.model.decode_head.dilations == (1, 6, 12, 18)
        # training crops are the size the data preprocessor pads to
        steps = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
        assert steps['RandomCrop'].crop_size == \
            cfg.model.data_preprocessor.size
