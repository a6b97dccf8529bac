"""tools/demo.py end to end: both runs (BCN+WS and GN+WS) trained by real
Runners, scored by the real CocoMetric / IoUMetric, one table (markdown and
JSON) with both rows, and both pictures; the segmentation demo's SyncBN
run, added to a finished demo; --summarize over seeds."""
import argparse
import json
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from PIL import Image
from torch import nn

from mmbcn.datasets import generate_shapes_coco
from mmbcn.demo.results import kept_rows
from mmbcn.demo.run_config import scaled_schedule, write_run_config
from mmbcn.demo.supervise import Job, ProgressLine, run_jobs
from mmbcn.utils import scoped_build
from tool_runner import REPO, load_tool, run

DEMO = osp.join(REPO, 'tools', 'demo.py')
SEG_DEMO = osp.join(REPO, 'configs', 'deeplabv3',
                    'deeplabv3_r18b-d16_{}_1xb4-1k_voc-shapes-128x128_demo.py')


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


def seg_options(tmp_path):
    """The segmentation data in ``tmp_path``, 2 images per iteration, the
    first 4 validation images."""
    return data_options(tmp_path / 'voc', evaluator=False) + [
        'train_dataloader.batch_size=2', 'val_dataloader.dataset.indices=4'
    ]


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
        '--val-interval', '4', '--work-dir',
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
    progress = [line for line in proc.stdout.splitlines()
                if line.startswith('  training:')]
    assert len(progress) == len(set(progress))  # printed when it changes
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
        assert 'max_iters=4' in text and 'val_interval=4' in text


@pytest.mark.slow
def test_segmentation_demo_trains_both_then_adds_syncbn(tmp_path):
    work = tmp_path / 'work'
    run([
        sys.executable, DEMO, '--task', 'segmentation', '--max-iters', '2',
        '--val-interval', '2', '--work-dir',
        str(work), '--cfg-options'
    ] + seg_options(tmp_path))
    rows = json.loads((work / 'results.json').read_text())['runs']
    assert [r['name'] for r in rows] == ['SyncBCN+WS', 'GN+WS']
    for row in rows:
        assert row['iterations'] == 2 and 0.0 <= row['mIoU'] <= 100.0
    result = json.loads((work / 'gn' / 'result.json').read_text())
    assert [i for i, _ in result['history']['mIoU']] == [2]  # one validation
    check_pictures(work)
    # SyncBN added to the finished demo: its row joins the two others
    before = (work / 'results.json').read_text()
    proc = run([
        sys.executable, DEMO, '--task', 'segmentation', '--runs', 'bn',
        '--max-iters', '2', '--val-interval', '2', '--work-dir',
        str(work), '--cfg-options'
    ] + seg_options(tmp_path))
    summary = json.loads((work / 'results.json').read_text())
    assert [r['name'] for r in summary['runs']] == [
        'SyncBCN+WS', 'GN+WS', 'SyncBN']
    assert summary['runs'][:2] == json.loads(before)['runs']
    bn = summary['runs'][2]
    assert bn['iterations'] == 2 and 0.0 <= bn['mIoU'] <= 100.0
    assert summary['added'][0]['runs'] == ['bn']
    table = (work / 'results.md').read_text().splitlines()
    assert [line.split(' | ')[0] for line in table[2:]] == [
        '| SyncBCN+WS', '| GN+WS', '| SyncBN']
    assert '| SyncBN |' in proc.stdout
    state = torch.load(bn['checkpoint'], weights_only=True)['state_dict']
    assert any(k.endswith('bn1.running_mean') for k in state)
    check_pictures(work)


def test_schedule_follows_the_budget():
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
    warmup, steps = scaled_schedule(schedule, 1000, 500)
    assert warmup['end'] == 50  # a warm-up keeps its length
    assert (steps['end'], steps['milestones']) == (500, [400])
    warmup, steps = scaled_schedule(schedule, 1000, 4)
    assert warmup['end'] == 4 and steps['milestones'] == [3]
    with pytest.raises(ValueError, match='iteration-based'):
        scaled_schedule([dict(type='MultiStepLR', by_epoch=True)], 10, 5)


# ------------------------------------------------------------ SyncBN run
def test_syncbn_config_is_the_gn_ws_demo_with_syncbn_and_plain_convs():
    bn = Config.fromfile(SEG_DEMO.format('syncbn'))
    gn = Config.fromfile(SEG_DEMO.format('gn-ws'))
    model = scoped_build(bn.model, bn.default_scope)
    norms = [m for m in model.modules()
             if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        assert bn.model[part].norm_cfg == dict(type='SyncBN',
                                               requires_grad=True), part
        assert bn.model[part].conv_cfg is None, part
    # nothing else differs from the GN+WS demo
    bn, gn = bn.to_dict(), gn.to_dict()
    for cfg in (bn, gn):
        for key in ('norm_cfg', 'conv_cfg'):
            cfg.pop(key, None)
            for part in ('backbone', 'decode_head', 'auxiliary_head'):
                cfg['model'][part].pop(key)
    assert bn == gn


def test_runs_bn_is_a_segmentation_run(capsys):
    demo = load_tool('demo')
    args = demo.parse_args(['--task', 'segmentation', '--runs', 'bcn', 'gn',
                            'bn'])
    assert args.runs == ['bcn', 'gn', 'bn']
    assert demo.parse_args(['--task', 'segmentation']).runs == ['bcn', 'gn']
    with pytest.raises(SystemExit):
        demo.parse_args(['--runs', 'bn'])  # detection has no SyncBN run
    assert '--runs bn: not a run of --task detection' in (
        capsys.readouterr().err)


def seed_results(folder, seed, miou, names=('SyncBCN+WS', 'GN+WS', 'SyncBN')):
    rows = [dict(name=name, mIoU=value, mAcc=value, aAcc=value,
                 train_minutes=1.0, total_minutes=2.0)
            for name, value in zip(names, miou)]
    folder.mkdir()
    (folder / 'results.json').write_text(json.dumps(
        dict(task='segmentation', seed=seed, runs=rows)))
    return str(folder)


def test_summarize_three_runs_pairs_each_with_gn_ws(tmp_path):
    demo = load_tool('demo')
    dirs = [
        seed_results(tmp_path / 's0', 0, [90.0, 80.0, 70.0]),
        seed_results(tmp_path / 's1', 1, [92.0, 84.0, 77.0]),
        # a seed without the SyncBN run, its rows in another order
        seed_results(tmp_path / 's2', 2, [85.0, 94.0],
                     names=('GN+WS', 'SyncBCN+WS')),
    ]
    lines = demo.main(['--summarize'] + dirs)
    rows = {line.split(' | ')[0][2:]: line.split(' | ')[1]
            for line in lines if line.startswith('| ')}
    assert list(rows)[1:] == [
        'SyncBCN+WS', 'GN+WS', 'SyncBN (seeds 0, 1)',
        'SyncBCN+WS − GN+WS (paired)', 'SyncBN − GN+WS (paired) (seeds 0, 1)'
    ]
    assert rows['SyncBCN+WS'] == '92.00 ± 2.00'
    assert rows['GN+WS'] == '83.00 ± 2.65'
    assert rows['SyncBN (seeds 0, 1)'] == '73.50 ± 4.95'
    # differences 10, 8, 9 and -10, -7
    assert rows['SyncBCN+WS − GN+WS (paired)'] == '9.00 ± 1.00'
    assert rows['SyncBN − GN+WS (paired) (seeds 0, 1)'] == '-8.50 ± 2.12'


def finished_demo(tmp_path, **settings):
    """A work dir holding a finished two-run segmentation demo (its rows
    and dumped run configs) with ``settings``; the args that add SyncBN."""
    options = dict(seed=0, max_iters=4, val_interval=None, img_size=None)
    work = tmp_path / 'work'
    old = argparse.Namespace(task='segmentation', work_dir=str(work),
                             **dict(options, **settings))
    for run_name in ('bcn', 'gn'):
        (work / run_name).mkdir(parents=True)
        write_run_config(SEG_DEMO.format(
            'syncbcn-ws' if run_name == 'bcn' else 'gn-ws'),
            str(work / run_name), old)
    rows = [dict(run='bcn', name='SyncBCN+WS'), dict(name='GN+WS')]
    for row in rows:
        row.update(mIoU=1.0, mAcc=1.0, aAcc=1.0, train_minutes=1.0,
                   total_minutes=1.0)
    (work / 'results.json').write_text(json.dumps(
        dict(task='segmentation', seed=old.seed, runs=rows)))
    new = argparse.Namespace(task='segmentation', work_dir=str(work),
                             cfg_options=[], **options)
    (work / 'bn').mkdir()
    config = write_run_config(SEG_DEMO.format('syncbn'), str(work / 'bn'),
                              new)
    return new, config


def test_added_run_keeps_the_rows_of_the_same_settings(tmp_path):
    args, config = finished_demo(tmp_path)
    kept, previous = kept_rows(args, ['bn'], config)
    assert [r['name'] for r in kept] == ['SyncBCN+WS', 'GN+WS']
    assert previous['seed'] == 0
    # training every run again starts a new table
    assert kept_rows(args, ['bcn', 'gn', 'bn'], config) == ([], None)


@pytest.mark.parametrize('settings,options,named', [
    (dict(seed=1), [], 'seed 1 (now 0)'),
    (dict(max_iters=8), [], 'iterations 8 (now 4)'),
    (dict(val_interval=2), [], 'val_interval 2 (now 1)'),
    ({}, ['train_dataloader.batch_size=2'], 'batch_size 4 (now 2)'),
])
def test_added_run_with_other_settings_is_refused(tmp_path, settings,
                                                  options, named):
    args, config = finished_demo(tmp_path, **settings)
    args.cfg_options = options
    with pytest.raises(SystemExit) as error:
        kept_rows(args, ['bn'], config)
    assert named in str(error.value) and '--work-dir' in str(error.value)


# ------------------------------------------------------ worker processes
def test_progress_line_is_printed_when_it_changes(capsys):
    now = [0.0]
    line = ProgressLine(interval=60, clock=lambda: now[0])
    printed = []
    for t, text in [(10, 'a starting'), (61, 'a starting'),
                    (200, 'a starting'), (300, 'a iter 5/9'),
                    (310, 'a iter 6/9'), (400, 'a iter 6/9'),
                    (420, 'a iter 7/9')]:
        now[0] = t
        if line.update(text):
            printed.append(t)
    assert printed == [61, 300, 400]
    assert capsys.readouterr().out.splitlines() == [
        'a starting', 'a iter 5/9', 'a iter 6/9']


def test_run_jobs_runs_each_and_stops_at_the_first_failure(tmp_path):
    def job(name, code):
        return Job(name, [sys.executable, '-c', code],
                   str(tmp_path / f'{name}.log'))

    done = []
    run_jobs([job('a', 'print("A")'), job('b', 'print("B")')], str(tmp_path),
             concurrent=False, threads=1, on_done=lambda j: done.append(j))
    assert [j.name for j in done] == ['a', 'b']
    assert (tmp_path / 'b.log').read_text() == 'B\n'
    with pytest.raises(SystemExit) as error:
        run_jobs([job('c', 'import time; time.sleep(60)'),
                  job('d', 'raise SystemExit("d broke")')], str(tmp_path),
                 concurrent=True, threads=1)
    assert 'd training failed (1)' in str(error.value)
    assert 'd broke' in str(error.value)
