# Copyright (c) mmbcn contributors. All rights reserved.
"""One-epoch smoke runs of the Fig. 1 and Fig. 3 tools, on the bundled
digits and on CIFAR-10 in its python format."""
import csv
import math
import os.path as osp

import pytest
import torch

from fake_cifar import write_fake_cifar
from tool_runner import load_tool


@pytest.fixture(autouse=True)
def keep_threads():
    """The tools set torch's thread count (--threads); restore it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def check_png(path):
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_fig1_digits_one_epoch(tmp_path):
    pytest.importorskip('sklearn')
    pytest.importorskip('matplotlib')
    fig1 = load_tool('analysis/fig1_fixed_statistics')
    rows = fig1.main([
        '--epochs', '1', '--sigma-mu', '0,1', '--sigma-sigma', '0,6',
        '--out-dir', str(tmp_path)
    ])
    stem = osp.join(str(tmp_path), 'fig1_fixed_statistics_digits')
    table = read_csv(stem + '.csv')
    assert [(r['sigma_mu'], r['sigma_sigma']) for r in table] == [
        ('0.0000', '0.0000'), ('0.0000', '6.0000'), ('1.0000', '0.0000'),
        ('1.0000', '6.0000')
    ]
    assert len(rows) == 4
    # BatchNorm's corner learns in one epoch (chance: 0.1); log-stds spread
    # by 6 (factors up to e^18) diverge
    assert rows[0]['test_acc'] > 0.25
    for r in rows[1], rows[3]:
        assert r['failed'] == 'yes' and r['diverged'] == 'yes'
        assert math.isnan(r['test_acc'])
    check_png(stem + '.png')
    assert open(stem + '.md').read().startswith('| sigma_mu | sigma_sigma |')


@pytest.mark.slow
def test_fig3_digits_one_epoch(tmp_path):
    pytest.importorskip('sklearn')
    pytest.importorskip('matplotlib')
    fig3 = load_tool('analysis/fig3_stat_diff')
    rows = fig3.main(['--epochs', '1', '--out-dir', str(tmp_path)])
    stem = osp.join(str(tmp_path), 'fig3_stat_diff_digits')
    table = read_csv(stem + '.csv')
    assert [r['variant'] for r in table] == [
        'GN', 'GN+WS', 'LN', 'LN+WS', 'BCN+WS'
    ]
    for r in rows:
        assert r['epoch'] == 1 and r['stat_diff_mean'] >= 0
        assert 0 <= r['dead_fraction'] <= 1
        assert 0 <= r['small_scale_fraction'] <= 1
    check_png(stem + '.png')


@pytest.mark.slow
def test_tools_on_cifar10_python_format(tmp_path):
    pytest.importorskip('matplotlib')
    folder = write_fake_cifar(str(tmp_path / 'data'), per_batch=8)
    fig1 = load_tool('analysis/fig1_fixed_statistics')
    fig1.main([
        '--cifar10', folder, '--epochs', '1', '--grid', '0', '--width', '4',
        '--out-dir', str(tmp_path)
    ])
    fig3 = load_tool('analysis/fig3_stat_diff')
    fig3.main([
        '--cifar10', str(tmp_path / 'data'), '--epochs', '1', '--variants',
        'BCN+WS,BN', '--train-size', '16', '--out-dir', str(tmp_path)
    ])
    for stem in ('fig1_fixed_statistics_cifar10', 'fig3_stat_diff_cifar10'):
        check_png(osp.join(str(tmp_path), stem + '.png'))
    rows = read_csv(osp.join(str(tmp_path), 'fig3_stat_diff_cifar10.csv'))
    assert [r['variant'] for r in rows] == ['BCN+WS', 'BN']
    assert float(rows[1]['stat_diff_mean']) == 0.0  # BN: Eq. 5


def test_tools_reject_bad_arguments(tmp_path, capsys):
    fig1 = load_tool('analysis/fig1_fixed_statistics')
    fig3 = load_tool('analysis/fig3_stat_diff')
    for tool, argv, message in (
        (fig1, ['--grid', '0,-1'], 'non-negative'),
        (fig1, ['--epochs', '0'], '--epochs must be positive'),
        (fig3, ['--depth', '10'], '6n+2'),
        (fig3, ['--variants', 'GN,XN'], 'unknown variant'),
    ):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='does not exist'):
        fig3.main(['--cifar10', str(tmp_path / 'missing'), '--out-dir',
                   str(tmp_path)])
