"""The configs that put BCN+WS on the schedules of the strongest public
baselines: mmdet's GN+WS Mask R-CNN R-50-FPN 20-23-24e and mmseg's DeepLabV3
R-101-D8 VOC12aug 20k. Each builds its full model with BCN where its name
says, and carries exactly the upstream schedule and data recipe."""
import os.path as osp

import mmdet
import mmseg
import pytest
import torch
from mmengine.config import Config
from torch import nn

import mmbcn  # noqa: F401
from mmbcn.models.official_checkpoint import ARCHITECTURES, target_state_shapes
from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d
from mmbcn.utils import scoped_build
from tool_runner import REPO

DET = osp.join(REPO, 'configs', 'mask_rcnn',
               'mask-rcnn_r50_fpn_bcn-ws-all_20-23-24e_coco.py')
SEG = osp.join(REPO, 'configs', 'deeplabv3',
               'deeplabv3_r101-d8_syncbcn-ws_4xb4-20k_voc12aug-512x512.py')
MMDET = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
MMSEG = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')
UPSTREAM_DET = osp.join(MMDET, 'gn+ws',
                        'mask-rcnn_r50_fpn_gn-ws-all_20-23-24e_coco.py')
UPSTREAM_SEG = osp.join(MMSEG, 'deeplabv3',
                        'deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512.py')


def build(cfg, scope):
    cfg.model.backbone.init_cfg = None  # no weights in tests
    model = scoped_build(cfg.model, scope)
    model.init_weights()
    return model


def plain(node):
    """A config value without mmengine's ``_scope_`` marks (added to the
    configs read through ``mmdet::``/``mmseg::``), for comparison."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(plain(v) for v in node)
    return node


def norms_of(module):
    return [
        m for m in module.modules()
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm,
                          BatchChannelNorm))
    ]


def test_detection_config_has_mmdets_20_23_24e_schedule():
    cfg, upstream = Config.fromfile(DET), Config.fromfile(UPSTREAM_DET)
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                'val_evaluator'):
        assert plain(cfg[key]) == plain(upstream[key]), key
    assert plain(cfg.train_dataloader.dataset) == plain(
        upstream.train_dataloader.dataset)
    assert cfg.train_cfg.max_epochs == 24
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end,
            warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
    assert (steps.type, steps.milestones, steps.by_epoch,
            steps.gamma) == ('MultiStepLR', [20, 23], True, 0.1)
    # micro-batch BCN+WS, as the 2x config: 4 GPUs x 1 image, r = lr
    assert cfg.train_dataloader.batch_size == 1
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert dict(type='BCNUpdateRateHook') in cfg.custom_hooks
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'checkpoints/r50_bcn-ws_imagenet.pth'


@pytest.mark.slow
def test_detection_config_builds_bcn_ws_everywhere():
    model = build(Config.fromfile(DET), 'mmdet')
    assert model.backbone.depth == 50
    assert type(model.roi_head.bbox_head).__name__ == 'Shared4Conv1FCBBoxHead'
    for part in (model.backbone, model.neck, model.roi_head.bbox_head,
                 model.roi_head.mask_head):
        norms = norms_of(part)
        assert norms and all(
            isinstance(m, BatchChannelNorm) and m.estimate
            and m.num_groups == 32 for m in norms)
        assert any(isinstance(m, WSConv2d) for m in part.modules())
    assert not model.backbone.norm_eval


def test_segmentation_config_has_mmsegs_20k_recipe():
    cfg, upstream = Config.fromfile(SEG), Config.fromfile(UPSTREAM_SEG)
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                'train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator'):
        assert plain(cfg[key]) == plain(upstream[key]), key
    assert cfg.train_cfg.max_iters == 20000
    [poly] = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9,
                                                               1e-4, 20000)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.lr, optimizer.weight_decay) == (0.01, 0.0005)
    assert cfg.train_dataloader.batch_size == 4  # x 4 GPUs
    assert cfg.model.data_preprocessor.size == (512, 512)
    # output stride 8 and ASPP 12/24/36, as upstream
    for key in ('strides', 'dilations', 'contract_dilation', 'depth'):
        assert cfg.model.backbone[key] == upstream.model.backbone[key], key
    assert cfg.model.decode_head.dilations == (1, 12, 24, 36)
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='checkpoints/r101_bcn-ws_imagenet.pth')


@pytest.mark.slow
def test_segmentation_config_builds_syncbcn_ws_everywhere():
    model = build(Config.fromfile(SEG), 'mmseg')
    for part in (model.backbone, model.decode_head, model.auxiliary_head):
        norms = norms_of(part)
        assert norms and all(
            isinstance(m, SyncBatchChannelNorm) and not m.estimate
            and m.num_groups == 32 for m in norms)
        convs = [
            m for name, m in part.named_modules()
            if isinstance(m, nn.Conv2d) and 'conv_seg' not in name
        ]
        assert convs and all(isinstance(m, WSConv2d) for m in convs)
    assert not model.backbone.norm_eval
    # the authors' converted ImageNet BCN+WS ResNet-101 fits key for key
    [arch] = [a for a in ARCHITECTURES if a.name == 'ResNet-101']
    ours = {k: v.shape for k, v in model.backbone.state_dict().items()}
    assert ours == target_state_shapes(arch)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8


@pytest.mark.parametrize('path', [DET, SEG], ids=osp.basename)
def test_anchor_configs_are_listed_in_the_docs(path):
    name = osp.basename(path)
    readme = open(osp.join(REPO, 'README.md')).read()
    assert name in readme
