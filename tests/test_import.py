"""``import mmbcn`` registers the layers, hooks and checkpoint loaders without
importing mmdet, mmseg or the analysis experiments; the modules a config
names in ``custom_imports`` register the demo datasets and the mmseg head.

Each check runs in a fresh interpreter: this process has imported
everything already."""
import json
import subprocess
import sys
import textwrap

import pytest

from tool_runner import REPO
from torch_alone import BLOCK_OPENMMLAB

HEAVY = ('mmdet', 'mmseg', 'mmbcn.analysis', 'mmbcn.datasets',
         'mmbcn.models')


def run_python(code):
    """Run ``code`` in a fresh interpreter at the repository root; return
    the JSON it prints last."""
    done = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_import_mmbcn_is_light_and_registers_layers_and_hooks():
    out = run_python(f"""
        import json, sys
        import mmbcn
        from mmengine.registry import HOOKS, MODEL_WRAPPERS, MODELS
        from mmengine.runner.checkpoint import CheckpointLoader
        from mmbcn.engine.checkpoint.schemes import LOADERS
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        models = {{n: MODELS.get(n).__name__
                  for n in ('BCN', 'SyncBCN', 'WSConv')}}
        hooks = [n for n in ('BCNUpdateRateHook', 'WeightsOnlyCheckpointHook',
                             'SafeCheckpointHook', 'SingularityHook',
                             'MainProcessLoggerHook')
                 if HOOKS.get(n) is not None]
        wrappers = [n for n in ('CPUDistributedDataParallel',)
                    if MODEL_WRAPPERS.get(n) is not None]
        schemes = [p for p, f in LOADERS.items()
                   if CheckpointLoader._schemes.get(p) is f]
        print(json.dumps(dict(loaded=loaded, models=models, hooks=hooks,
                              wrappers=wrappers, schemes=schemes,
                              expected_schemes=list(LOADERS))))
    """)
    assert out['loaded'] == []
    assert out['models'] == dict(BCN='BatchChannelNorm',
                                 SyncBCN='SyncBatchChannelNorm',
                                 WSConv='WSConv2d')
    assert out['hooks'] == [
        'BCNUpdateRateHook', 'WeightsOnlyCheckpointHook',
        'SafeCheckpointHook', 'SingularityHook', 'MainProcessLoggerHook'
    ]
    assert out['wrappers'] == ['CPUDistributedDataParallel']
    assert out['schemes'] == out['expected_schemes']


def test_layers_import_and_run_with_torch_alone():
    out = run_python(BLOCK_OPENMMLAB + """
import json, sys
import torch
import mmbcn.ops
from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm, WSConv2d
import mmbcn
conv = mmbcn.ops.WSConv2d(3, 4, 3, eps=1e-10)
y = BatchChannelNorm(4, num_groups=2)(conv(torch.randn(2, 3, 5, 5)))
w = conv.standardized_weight().flatten(1)
print(json.dumps(dict(
    shape=list(y.shape),
    row_means=w.mean(1).abs().max().item(),
    row_vars=w.var(1).tolist(),
    top_level=[n for n in ('BatchChannelNorm', 'SyncBatchChannelNorm',
                           'WSConv2d') if hasattr(mmbcn, n)],
    openmmlab=[m for m in sys.modules if m.split('.')[0] in (
        'mmcv', 'mmengine', 'mmdet', 'mmseg')])))
""")
    assert out['openmmlab'] == []
    assert out['shape'] == [2, 4, 3, 3]
    assert out['row_means'] < 1e-6
    assert out['row_vars'] == pytest.approx([1.0] * 4, abs=1e-4)
    assert out['top_level'] == [
        'BatchChannelNorm', 'SyncBatchChannelNorm', 'WSConv2d'
    ]


def test_layers_have_one_home():
    """The registered layers are the classes of :mod:`mmbcn.ops`; the
    modules that defined copies of them are gone."""
    import importlib

    from mmengine.registry import MODELS

    import mmbcn
    from mmbcn import ops
    assert MODELS.get('BCN') is ops.BatchChannelNorm is mmbcn.BatchChannelNorm
    assert MODELS.get('SyncBCN') is ops.SyncBatchChannelNorm
    assert MODELS.get('WSConv') is ops.WSConv2d is mmbcn.WSConv2d
    for gone in ('mmbcn.cnn.bcn', 'mmbcn.cnn.ws_conv'):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(gone)


def test_mmbcn_datasets_loads_one_codebase_per_name():
    out = run_python(f"""
        import json, sys
        import mmbcn.datasets
        light = [m for m in {HEAVY[:2]!r} if m in sys.modules]
        from mmbcn.datasets import generate_shapes_coco
        coco = [m for m in {HEAVY[:2]!r} if m in sys.modules]
        print(json.dumps(dict(light=light, coco=coco)))
    """)
    assert out == dict(light=[], coco=['mmdet'])


def test_every_name_of_mmbcn_datasets_resolves():
    import mmbcn.datasets
    for name in mmbcn.datasets.__all__:
        value = getattr(mmbcn.datasets, name)
        assert value.__name__ == name, name


# slow: fresh interpreters, each importing mmdet or mmseg
@pytest.mark.slow
@pytest.mark.parametrize('module, registry, names', [
    ('mmbcn.datasets.coco_demo', 'mmdet.registry.DATASETS',
     ['ShapesCocoDataset']),
    ('mmbcn.datasets.voc_demo', 'mmseg.registry.DATASETS',
     ['VOCShapesDataset']),
    ('mmbcn.datasets.voc_demo', 'mmseg.registry.TRANSFORMS',
     ['CheckSegMapSize']),
    ('mmbcn.datasets.shapes_cls', 'mmengine.registry.DATASETS',
     ['ShapesClsDataset']),
    ('mmbcn.models', 'mmseg.registry.MODELS', ['BCNASPPHead']),
])
def test_config_modules_register_their_names(module, registry, names):
    scope, _, name = registry.rpartition('.')
    out = run_python(f"""
        import importlib, json
        from mmengine.utils import import_modules_from_strings
        registry = getattr(importlib.import_module({scope!r}), {name!r})
        before = [n for n in {names!r} if n in registry.module_dict]
        # as Config.fromfile does with a config's custom_imports
        import_modules_from_strings(imports=['mmbcn', {module!r}],
                                    allow_failed_imports=False)
        after = [n for n in {names!r} if n in registry.module_dict]
        print(json.dumps(dict(before=before, after=after)))
    """)
    assert out == dict(before=[], after=names)
