"""mmbcn.engine.tool_setup.prepare_and_check_data: a dataset type no
imported module registers is named with the module to import."""
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmbcn.engine import prepare_and_check_data


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
        'from mmbcn.engine import prepare_and_check_data\n'
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
