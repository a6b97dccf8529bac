"""Every shipped detection config loads, builds its full model and runs one
forward pass on a small image; the paper's detection configs hold its
micro-batch settings (Sec. 4.2). What holds for every config (norms and WS
as the file name says, custom_imports, hooks) is in
tests/test_config_invariants.py."""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config

import mmbcn  # noqa: F401
from mmbcn.ops import BatchChannelNorm
from mmbcn.utils import scoped_build
from tool_runner import REPO

CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', 'faster_rcnn', '*.py')) +
    glob.glob(osp.join(REPO, 'configs', 'mask_rcnn', '*.py')))
PAPER = [c for c in CONFIGS if not c.endswith('_demo.py')]
NORM_LAYERS = (BatchChannelNorm, torch.nn.GroupNorm)


def test_paper_configs_are_shipped():
    names = {osp.basename(c) for c in PAPER}
    assert names >= {
        'faster-rcnn_r50_fpn_bcn-ws-all_1x_coco.py',
        'faster-rcnn_r101_fpn_bcn-ws-all_1x_coco.py',
        'faster-rcnn_x50-32x4d_fpn_bcn-ws-all_1x_coco.py',
        'mask-rcnn_r50_fpn_bcn-ws-all_2x_coco.py',
        'mask-rcnn_r50_fpn_bcn-ws-all_20-23-24e_coco.py',
        'mask-rcnn_r101_fpn_bcn-ws-all_2x_coco.py',
    }


def one_image(size=96):
    sample = DetDataSample(metainfo=dict(
        img_shape=(size, size), ori_shape=(size, size), pad_shape=(size,
                                                                   size),
        scale_factor=(1.0, 1.0), batch_input_shape=(size, size)))
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 255, (3, size, size), generator=g,
                        dtype=torch.uint8)
    return dict(inputs=[img], data_samples=[sample])


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
@pytest.mark.slow
def test_config_builds_and_predicts(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no weights in tests
    model = scoped_build(cfg.model, 'mmdet', MODELS)
    model.init_weights()
    # '-all': the backbone, the neck and the heads with convolutions are
    # normalized, as in the paper (which norm and the WS convolutions:
    # tests/test_config_invariants.py)
    for part in ('backbone', 'neck', 'roi_head.bbox_head',
                 'roi_head.mask_head'):
        module = model
        for attr in part.split('.'):
            module = getattr(module, attr, None)
        if module is not None:
            assert any(isinstance(m, NORM_LAYERS)
                       for m in module.modules()), f'{part}: no norm layer'
    model.eval()
    with torch.no_grad():
        results = model.test_step(one_image())
    assert len(results) == 1 and 'bboxes' in results[0].pred_instances


@pytest.mark.parametrize('path', PAPER, ids=osp.basename)
def test_micro_batch_training_settings(path):
    cfg = Config.fromfile(path)
    assert cfg.train_dataloader.batch_size == 1
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    # 4 GPUs x 1 image: mmengine scales 0.02 by 4/16
    assert cfg.optim_wrapper.optimizer.lr * 4 / 16 == pytest.approx(0.005)
    assert dict(type='BCNUpdateRateHook') in cfg.custom_hooks
    assert cfg.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    epochs = 24 if 'mask-rcnn' in path else 12
    assert cfg.train_cfg.max_epochs == epochs
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    assert checkpoint.startswith('checkpoints/') and 'bcn-ws_imagenet' in (
        checkpoint)
