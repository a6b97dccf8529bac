"""mmbcn.utils.quiet_imports: loading a config whose ``_base_`` is an
``mmdet::`` path (mmengine then imports and reloads pkg_resources) prints
setuptools' pkg_resources deprecation warning, twice, unless the module
is imported first; other warnings still show."""
import os.path as osp
import subprocess
import sys

from tool_runner import REPO

CONFIG = osp.join(REPO, 'configs', 'faster_rcnn',
                  'faster-rcnn_r50_fpn_bcn-ws-all_1x_coco.py')
LOAD = ('import warnings; from mmengine.config import Config; '
        f'Config.fromfile({CONFIG!r}, import_custom_modules=False); '
        "warnings.warn('another warning')")


def stderr_of(code):
    run = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_config_load_warns_without_the_filter():
    # the environment the filter is for: if this fails, setuptools no
    # longer warns and mmbcn/utils/quiet_imports.py can go
    err = stderr_of(LOAD)
    assert err.count('pkg_resources is deprecated as an API') == 2, err


def test_filter_silences_only_the_pkg_resources_warning():
    err = stderr_of('import mmbcn.utils.quiet_imports; ' + LOAD)
    assert 'pkg_resources' not in err, err
    assert 'UserWarning: another warning' in err, err


def test_a_tool_run_prints_no_pkg_resources_warning():
    """tools/train.py imports mmbcn before it loads the config: the run
    (refused after loading, at a bad option) prints no such warning."""
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG,
         '--cfg-options', 'train_cfg.max_epochs=0'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert 'max_epochs' in run.stderr, run.stderr  # it loaded the config
    assert 'pkg_resources' not in run.stderr, run.stderr
