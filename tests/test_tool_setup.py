"""mmbcn.engine.runner_support.tool_setup: prepare_and_check_data names a
dataset type no imported module registers with the module to import;
write_results_on_main_process gives the tools a logger hook whose test
metrics file only the main process writes."""
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmbcn.engine.runner_support import (prepare_and_check_data,
                                         write_results_on_main_process)


def config(dataset_type):
    return Config(dict(default_scope='mmdet', train_dataloader=dict(
        dataset=dict(type=dataset_type, data_root='data/shapes_coco/'))))


def test_unregistered_dataset_type_is_named():
    with pytest.raises(KeyError, match=r"train_dataloader\.dataset\.type: "
                       r"'NoSuchDataset' is not registered.*custom_imports"):
        prepare_and_check_data(config('NoSuchDataset'), ['train_dataloader'])


def test_demo_dataset_without_its_module_names_the_module():
    """``custom_imports=['mmbcn']`` alone does not register the demo
    datasets (``import mmbcn`` stays light): the error says which module
    to add. Run in a fresh interpreter, where nothing imported it."""
    code = (
        'import mmdet.datasets, mmbcn\n'
        'from test_tool_setup import config\n'
        'from mmbcn.engine.runner_support import prepare_and_check_data\n'
        'try:\n'
        "    prepare_and_check_data(config('ShapesCocoDataset'), "
        "['train_dataloader'])\n"
        'except KeyError as error:\n'
        '    print(error)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, cwd=__file__.rsplit('/', 1)[0],
                         check=True).stdout
    assert "'ShapesCocoDataset' is not registered" in out
    assert "add 'mmbcn.datasets.coco_demo' to custom_imports" in out


@pytest.mark.parametrize('hooks,expected', [
    (None, 'MainProcessLoggerHook'),
    ({}, 'MainProcessLoggerHook'),
    ({'logger': dict(type='LoggerHook', interval=5)},
     'MainProcessLoggerHook'),
    ({'logger': dict(type='mmengine.LoggerHook')}, 'MainProcessLoggerHook'),
    ({'logger': dict(type='MyLoggerHook')}, 'MyLoggerHook'),
])
def test_tools_write_test_metrics_on_the_main_process(hooks, expected):
    """mmengine's logger hook (declared or the Runner's default) becomes
    MainProcessLoggerHook with its arguments; a hook of the user's own
    type is left as it is."""
    cfg = Config(dict(default_hooks=hooks) if hooks is not None else {})
    write_results_on_main_process(cfg)
    assert cfg.default_hooks.logger.type == expected
    if hooks and hooks['logger'].get('interval'):
        assert cfg.default_hooks.logger.interval == 5


def test_disabled_logger_hook_stays_disabled():
    cfg = Config(dict(default_hooks=dict(logger=None)))
    write_results_on_main_process(cfg)
    assert cfg.default_hooks.logger is None
