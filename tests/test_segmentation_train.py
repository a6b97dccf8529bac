"""DeepLabV3 with BCN+WS trained and evaluated through the repository's
tools on the bundled data: mmseg's IoUMetric against IoU counted here from
the dumped predictions, and SyncBCN in 2 gloo processes against one process
on the concatenated batch."""
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dist_utils import free_port
from mmbcn.datasets.voc_demo import CLASSES, VOID, prepare_voc_shapes
from tool_runner import REPO, load_tool, run

pytestmark = pytest.mark.slow

DEMO = osp.join(REPO, 'configs', 'deeplabv3',
                'deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-'
                '128x128_demo.py')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'voc_shapes'
    prepare_voc_shapes(str(root))
    return root


CROP = ('dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), '
        'dict(type="CheckSegMapSize"), '
        'dict(type="RandomCrop", crop_size=crop_size), '
        'dict(type="PackSegInputs")')


def write_config(tmp_path, shapes, pipeline=CROP, shuffle=True, model='',
                 lines=()):
    """The demo config on ``shapes``: in-process loading, 64x64 crops, the
    first 4 val images."""
    text = [
        f'_base_ = {DEMO!r}',
        "custom_imports = dict(imports=['mmbcn', 'mmbcn.datasets.voc_demo', "
        "'mmbcn_test_hooks'], allow_failed_imports=False)",
        'crop_size = (64, 64)',
        f'model = dict(data_preprocessor=dict(size=crop_size){model})',
        f"data_root = '{shapes}'",
        'train_dataloader = dict(batch_size=2, num_workers=0, '
        f'persistent_workers=False, sampler=dict(shuffle={shuffle}), '
        f'dataset=dict(data_root=data_root, pipeline=[{pipeline}]))',
        'val_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root, indices=4))',
        'test_dataloader = val_dataloader',
    ] + list(lines)
    path = tmp_path / 'cfg.py'
    path.write_text('\n'.join(text) + '\n')
    return str(path)


def iters(n):
    return [
        '--cfg-options', f'train_cfg.max_iters={n}',
        f'train_cfg.val_interval={n}', f'default_hooks.checkpoint.interval={n}'
    ]


def counted_miou(predictions):
    """mIoU in % over the classes present in ground truth or prediction,
    from the stored masks."""
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    for sample in predictions:
        pred = sample['pred_sem_seg']['data'][0].numpy()
        gt = np.array(Image.open(sample['seg_map_path']))
        valid = gt != VOID
        for c in range(len(CLASSES)):
            p, g = (pred == c) & valid, (gt == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    present = union > 0
    return 100 * float(np.mean(inter[present] / union[present]))


def test_train_then_test_with_iou_metric(tmp_path, shapes):
    cfg = write_config(tmp_path, shapes)
    runner = load_tool('train').main(
        [cfg, '--work-dir', str(tmp_path / 'work')] + iters(3))
    logged = runner.message_hub.log_scalars
    assert {'val/mIoU', 'val/aAcc', 'val/mAcc'} <= set(logged)
    val_miou = logged['val/mIoU'].current()
    ckpt = tmp_path / 'work' / 'iter_3.pth'
    assert torch.load(ckpt, weights_only=True)['meta']['iter'] == 3
    out = tmp_path / 'predictions.pkl'
    metrics = load_tool('test').main([
        cfg, str(ckpt), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(out)
    ])
    assert metrics['mIoU'] == pytest.approx(val_miou, abs=1e-6)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4
    assert metrics['mIoU'] == pytest.approx(counted_miou(predictions),
                                            abs=0.01)


def bcn_states(path):
    return torch.load(path, weights_only=True)


@pytest.mark.dist
def test_sync_bcn_two_processes_equal_one_process_on_the_joined_batch(
        tmp_path, shapes):
    """One iteration without randomness (augmentation, dropout), in order:
    ranks 0 and 1 take images (0, 2) and (1, 3), the single process
    (0, 1, 2, 3)."""
    fixed = ('dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), '
             'dict(type="Resize", scale=(64, 64), keep_ratio=False), '
             'dict(type="PackSegInputs")')
    no_dropout = (', decode_head=dict(dropout_ratio=0.0), '
                  'auxiliary_head=dict(dropout_ratio=0.0)')
    cfg = write_config(
        tmp_path, shapes, pipeline=fixed, shuffle=False, model=no_dropout,
        lines=["custom_hooks = [dict(type='DumpBCNStatisticsHook')]"])
    two, one = tmp_path / 'two', tmp_path / 'one'
    run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
         str(two)] + iters(1) + ['train_dataloader.batch_size=2'],
        timeout=900,
        env_extra=dict(PYTHON=sys.executable, PORT=str(free_port())))
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', str(one)] +
        iters(1) + ['train_dataloader.batch_size=4'], timeout=900)
    rank0 = bcn_states(two / 'bcn_rank0.pt')
    rank1 = bcn_states(two / 'bcn_rank1.pt')
    single = bcn_states(one / 'bcn_rank0.pt')
    assert rank0.keys() == rank1.keys() == single.keys()
    assert len(rank0) == 2 * 28  # every norm layer of backbone and heads
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4,
                                   atol=1e-5, msg=key)
    # the statistics moved away from their start (mean 0, variance 1)
    means = [v for k, v in single.items() if k.endswith('running_mean')]
    assert all(m.abs().max() > 1e-4 for m in means)
    # and the SGD step from the synchronized gradients is the same too
    two_state = torch.load(two / 'iter_1.pth',
                           weights_only=True)['state_dict']
    one_state = torch.load(one / 'iter_1.pth',
                           weights_only=True)['state_dict']
    for key in one_state:
        torch.testing.assert_close(two_state[key], one_state[key],
                                   rtol=1e-4, atol=1e-5, msg=key)
