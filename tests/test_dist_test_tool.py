"""tools/dist_test.sh: two gloo processes evaluate a checkpoint of the toy
BCN+WS model and report the metric that one process of tools/test.py
reports on the same checkpoint, printed and in the JSON log, which the
main process alone writes."""
import glob
import json
import re
import sys

import pytest
import torch
from mmengine.config import Config

import mmbcn  # noqa: F401
from bcn_reference import randomize
from dist_utils import free_port
from mmbcn.ops import BatchChannelNorm
from mmbcn.utils import scoped_build
from tool_runner import load_tool, run
from toy_run import toy_config

pytestmark = [
    pytest.mark.slow, pytest.mark.dist,
    pytest.mark.usefixtures('restore_default_scope')
]

# 15 images on 2 processes: the sampler pads one process's share with a
# repeated image, which the collected results must drop again. With a
# count of 15 the accuracy is k / 15; one process's 8 images alone would
# give j / 8, equal only at 0 or 1, which the test rules out.
OPTIONS = ['--cfg-options', 'test_dataloader.dataset.size=15',
           'log_level=INFO']


@pytest.fixture
def checkpoint(tmp_path):
    """(config, checkpoint): the toy model with random weights and BCN
    statistics (evaluation normalizes with them). The config's hooks log
    the rank of each process as the metric ``written_by_rank`` and make
    rank 1 run the logger hook after rank 0 (tests/helpers/
    rank_order_hooks.py): a metrics file written by every process ends up
    rank 1's."""
    config = toy_config(tmp_path, hooks=[
        dict(type='RankInTestMetricsHook'),
        dict(type='RankZeroLoggedHook')
    ])
    cfg = Config.fromfile(config)
    cfg.custom_imports.imports.append('rank_order_hooks')
    cfg.dump(config)
    torch.manual_seed(0)
    model = scoped_build(Config.fromfile(config).model, 'mmengine')
    bcn = [m for m in model.modules() if isinstance(m, BatchChannelNorm)]
    assert bcn
    for seed, layer in enumerate(bcn):
        randomize(layer, seed)
    path = str(tmp_path / 'toy.pth')
    torch.save({'state_dict': model.state_dict()}, path)
    return config, path


def json_metrics(work_dir):
    """The test metrics of the JSON log that mmengine's LoggerHook writes
    (WORK_DIR/TIMESTAMP/TIMESTAMP.json)."""
    logs = glob.glob(f'{work_dir}/*/*.json')
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        return json.loads(f.read().splitlines()[-1])


def test_two_processes_report_the_single_process_metric(checkpoint,
                                                        tmp_path):
    config, path = checkpoint
    single = load_tool('test').main(
        [config, path, '--work-dir', str(tmp_path / 'single')] + OPTIONS)
    accuracy = single['accuracy']
    assert 0.0 < accuracy < 1.0
    assert json_metrics(tmp_path / 'single')['accuracy'] == accuracy

    work = tmp_path / 'dist'
    proc = run(['bash', 'tools/dist_test.sh', config, path, '2',
                '--work-dir', str(work)] + OPTIONS,
               timeout=600,
               env_extra=dict(PYTHON=sys.executable, PORT=str(free_port()),
                              OMP_NUM_THREADS='1'))
    output = proc.stdout + proc.stderr
    # two processes, each through half of the 4 batches
    for line in ('Distributed training: True', 'GPU number: 2',
                 'Epoch(test) [2/2]'):
        assert line in output, output[-3000:]
    printed = re.findall(r'accuracy: (\d+\.\d+)', output)
    assert printed, output[-3000:]
    assert float(printed[-1]) == round(accuracy, 4)
    # the metrics file is rank 0's alone (rank 1 logged after it)
    metrics = json_metrics(work)
    assert metrics['accuracy'] == accuracy
    assert metrics['written_by_rank'] == 0
