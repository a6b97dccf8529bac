"""tools/demo.py end to end: both runs (BCN+WS and GN+WS) trained by real
Runners, scored by the real CocoMetric / IoUMetric, one table (markdown and
JSON) with both rows, and both pictures."""
import json
import os.path as osp
import sys

import pytest
import torch
from PIL import Image

from mmbcn.datasets import generate_shapes_coco
from tool_runner import REPO, load_tool, run

DEMO = osp.join(REPO, 'tools', 'demo.py')


def data_options(root, evaluator=True):
    keys = [
        'train_dataloader.dataset.data_root',
        'val_dataloader.dataset.data_root', 'test_dataloader.dataset.data_root'
    ]
    options = [f'{k}={root}/' for k in keys] + [
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False'
    ]
    if evaluator:
        options.append(
            f'val_evaluator.ann_file={root}/annotations/instances_val.json')
    return options


def check_pictures(work):
    for name in ('curves.png', 'predictions.png'):
        with Image.open(work / name) as img:
            assert img.format == 'PNG' and min(img.size) > 200, name


@pytest.mark.slow
def test_detection_demo_trains_both_and_writes_table_and_pictures(tmp_path):
    data = tmp_path / 'shapes'
    generate_shapes_coco(str(data), sizes=dict(train=8, val=3))
    work = tmp_path / 'work'
    proc = run([
        sys.executable, DEMO, '--max-iters', '4', '--img-size', '96',
        '--val-interval', '2', '--work-dir',
        str(work), '--cfg-options'
    ] + data_options(data))
    summary = json.loads((work / 'results.json').read_text())
    assert summary['task'] == 'detection' and summary['concurrent']
    rows = summary['runs']
    assert [r['name'] for r in rows] == ['BCN+WS', 'GN+WS']
    for row in rows:
        assert row['iterations'] == 4 and row['seed'] == 0
        for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                    'coco/segm_mAP_50'):
            assert 0.0 <= row[key] <= 1.0, key
        assert row['train_minutes'] > 0 and row['peak_memory_mib'] > 100
        assert osp.isfile(row['checkpoint'])
    table = (work / 'results.md').read_text().splitlines()
    assert len(table) == 4 and 'bbox mAP@50' in table[0]
    assert table[2].startswith('| BCN+WS |') and table[3].startswith(
        '| GN+WS |')
    assert '| BCN+WS |' in proc.stdout and '| GN+WS |' in proc.stdout
    check_pictures(work)
    # the two runs differ in the normalization only: BCN in estimate mode
    # (its estimates moved by the hook) against GroupNorm
    bcn = torch.load(rows[0]['checkpoint'], weights_only=True)['state_dict']
    gn = torch.load(rows[1]['checkpoint'], weights_only=True)['state_dict']
    means = [v for k, v in bcn.items() if k.endswith('bcn1.running_mean')]
    assert means and any(bool(m.abs().sum() > 0) for m in means)
    assert not any('running_mean' in k for k in gn)
    assert any(k.startswith('backbone.gn1') for k in gn)
    for run_dir in ('bcn', 'gn'):
        text = (work / run_dir / 'demo_config.py').read_text()
        assert 'randomness = dict(seed=0)' in text
        assert 'max_iters=4' in text


@pytest.mark.slow
def test_segmentation_demo_trains_both(tmp_path):
    work = tmp_path / 'work'
    run([
        sys.executable, DEMO, '--task', 'segmentation', '--max-iters', '2',
        '--work-dir',
        str(work), '--cfg-options'
    ] + data_options(tmp_path / 'voc', evaluator=False) +
        ['train_dataloader.batch_size=2'])
    rows = json.loads((work / 'results.json').read_text())['runs']
    assert [r['name'] for r in rows] == ['SyncBCN+WS', 'GN+WS']
    for row in rows:
        assert row['iterations'] == 2 and 0.0 <= row['mIoU'] <= 100.0
    check_pictures(work)


def test_schedule_follows_the_budget():
    demo = load_tool('demo')
    schedule = [
        dict(
            type='LinearLR',
            start_factor=0.01,
            by_epoch=False,
            begin=0,
            end=50),
        dict(
            type='MultiStepLR',
            by_epoch=False,
            begin=0,
            end=1000,
            milestones=[800],
            gamma=0.1)
    ]
    warmup, steps = demo.scaled_schedule(schedule, 1000, 500)
    assert warmup['end'] == 50  # a warm-up keeps its length
    assert (steps['end'], steps['milestones']) == (500, [400])
    warmup, steps = demo.scaled_schedule(schedule, 1000, 4)
    assert warmup['end'] == 4 and steps['milestones'] == [3]
    with pytest.raises(ValueError, match='iteration-based'):
        demo.scaled_schedule([dict(type='MultiStepLR', by_epoch=True)], 10, 5)
