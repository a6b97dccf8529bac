"""Every shipped config, itself or through its _base_ files (mostly
configs/_base_/default_runtime_safe_checkpoints.py), declares what makes
its checkpoints weights-only loadable and safely written, so that mmdet's/
mmseg's own tools, mim and Runner scripts (which add no hooks) write the
same checkpoints as ours. The _base_ files are not configs of their own."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from tool_runner import REPO

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True)
    if '_base_' not in p.split(osp.sep))


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.basename(p) for p in CONFIGS])
def test_config_declares_checkpoint_hooks(path):
    cfg = Config.fromfile(path)
    hooks = [h['type'] for h in cfg.get('custom_hooks') or []]
    assert 'WeightsOnlyCheckpointHook' in hooks, (
        f'{osp.basename(path)}: custom_hooks {hooks} lack '
        "dict(type='WeightsOnlyCheckpointHook')")
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
