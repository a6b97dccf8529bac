"""Real mmdet Mask R-CNN with BCN+WS trained and evaluated through the
repository's tools: CocoMetric, resume, 2 gloo processes, bad input."""
import os.path as osp
import sys

import pytest
import torch

from dist_utils import free_port
from mmbcn.datasets import generate_shapes_coco
from tool_runner import REPO, load_tool, run

pytestmark = pytest.mark.slow

DEMO = osp.join(REPO, 'configs', 'mask_rcnn',
                'mask-rcnn_r18_fpn_bcn-ws-all_demo.py')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'shapes'
    generate_shapes_coco(str(root), sizes=dict(train=12, val=4))
    return root


def write_config(tmp_path, shapes, base=DEMO, hooks=('BCNUpdateRateHook', ),
                 name='cfg.py', **extra):
    lines = [
        f'_base_ = {base!r}',
        "custom_imports = dict(imports=['mmbcn', 'mmbcn.datasets.coco_demo', "
        "'mmbcn_test_hooks'], allow_failed_imports=False)",
        f"data_root = '{shapes}/'",
        'train_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))',
        'val_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict('
        'data_root=data_root))',
        'test_dataloader = val_dataloader',
        "val_evaluator = dict(ann_file=data_root + "
        "'annotations/instances_val.json')",
        'test_evaluator = val_evaluator',
        # an untrained detector scores low: keep every prediction
        'model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))',
        'randomness = dict(seed=0)',
        'custom_hooks = [' + ', '.join(f'dict(type={h!r})'
                                       for h in hooks) + ']',
    ] + [f'{k} = {v!r}' for k, v in extra.items()]
    path = tmp_path / name
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def iters(n, save_every=None, validate=True):
    """--cfg-options: ``n`` iterations, a checkpoint every ``save_every``
    (default: at the end), no random flip; validation at the end, or none
    (``validate=False``)."""
    return [
        '--cfg-options', f'train_cfg.max_iters={n}',
        f'train_cfg.val_interval={n}',
        f'train_cfg.val_begin={1 if validate else n + 1}',
        f'default_hooks.checkpoint.interval={save_every or n}',
        'train_dataloader.dataset.pipeline.3.prob=0.0'  # no random flip
    ]


def state(path):
    return torch.load(path, map_location='cpu',
                      weights_only=True)['state_dict']


def test_train_then_test_with_coco_metric(tmp_path, shapes):
    cfg = write_config(tmp_path, shapes)
    runner = load_tool('train').main(
        [cfg, '--work-dir', str(tmp_path / 'work')] + iters(3))
    logged = runner.message_hub.log_scalars
    assert 'val/coco/bbox_mAP' in logged and 'val/coco/segm_mAP' in logged
    ckpt = tmp_path / 'work' / 'iter_3.pth'
    assert set(torch.load(ckpt, weights_only=True)) >= {
        'state_dict', 'meta', 'message_hub', 'optimizer', 'param_schedulers'
    }
    metrics = load_tool('test').main(
        [cfg, str(ckpt), '--work-dir', str(tmp_path / 'test')])
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_resume_continues_like_an_uninterrupted_run(tmp_path, shapes):
    hooks = ('ReseedEveryIterHook', 'BCNUpdateRateHook')
    cfg = write_config(tmp_path, shapes, hooks=hooks)
    train = load_tool('train').main
    train([cfg, '--work-dir', str(tmp_path / 'full')] +
          iters(4, 2, validate=False))
    train([cfg, '--work-dir', str(tmp_path / 'cut')] +
          iters(2, validate=False))
    train([cfg, '--work-dir', str(tmp_path / 'cut'), '--resume',
           str(tmp_path / 'cut' / 'iter_2.pth')] +
          iters(4, 2, validate=False))
    full = state(tmp_path / 'full' / 'iter_4.pth')
    resumed = state(tmp_path / 'cut' / 'iter_4.pth')
    at_cut = state(tmp_path / 'cut' / 'iter_2.pth')
    estimates = [k for k in full if k.endswith('running_mean')]
    assert len(estimates) > 20
    assert not torch.equal(full[estimates[0]], at_cut[estimates[0]])
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], msg=key)


def test_resume_from_another_model_is_refused(tmp_path, shapes):
    train = load_tool('train').main
    train([write_config(tmp_path, shapes), '--work-dir',
           str(tmp_path / 'bcn')] + iters(1, validate=False))
    gn = write_config(
        tmp_path, shapes, name='gn.py', hooks=(),
        base=DEMO.replace('bcn-ws-all', 'gn-ws-all'))
    with pytest.raises(ValueError, match='not from this model'):
        train([gn, '--work-dir', str(tmp_path / 'gn'), '--resume',
               str(tmp_path / 'bcn' / 'iter_1.pth')] +
              iters(2, validate=False))


def test_missing_dataset_fails_before_training(tmp_path):
    cfg = osp.join(REPO, 'configs', 'faster_rcnn',
                   'faster-rcnn_r50_fpn_bcn-ws-all_1x_coco.py')
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.data_root.*'
                       r'/no/such/coco'):
        load_tool('train').main([
            cfg, '--work-dir', str(tmp_path), '--cfg-options',
            'train_dataloader.dataset.data_root=/no/such/coco/'
        ])


def test_missing_pretrained_backbone_says_what_to_do(tmp_path, shapes):
    pretrained = dict(_delete_=True, type='Pretrained',
                      checkpoint='checkpoints/missing.pth')
    cfg = write_config(tmp_path, shapes,
                       model=dict(backbone=dict(init_cfg=pretrained)))
    with pytest.raises(FileNotFoundError,
                       match=r'official_bcn\.py.*model\.backbone\.init_cfg'
                       r'=None'):
        load_tool('train').main([cfg, '--work-dir', str(tmp_path)])


@pytest.mark.dist
def test_two_gloo_processes_hold_identical_estimates(tmp_path, shapes):
    cfg = write_config(tmp_path, shapes,
                       hooks=('BCNUpdateRateHook', 'DumpBCNStatisticsHook'))
    work = tmp_path / 'dist'
    run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(work)] +
        iters(3, validate=False),
        timeout=900,
        env_extra=dict(PYTHON=sys.executable, PORT=str(free_port())))
    rank0 = torch.load(work / 'bcn_rank0.pt', weights_only=True)
    rank1 = torch.load(work / 'bcn_rank1.pt', weights_only=True)
    assert rank0.keys() == rank1.keys() and len(rank0) > 40
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    means = [v for k, v in rank0.items() if k.endswith('running_mean')]
    assert any(m.abs().sum() > 0 for m in means)  # the estimates moved
