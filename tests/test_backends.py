"""Backend selection of mmbcn.ops.batch_channel_norm: what ``auto``
picks, forced backends that refuse with the reason, the environment
switches, and the op importing with torch alone."""
import os
import subprocess
import sys

import pytest
import torch

from mmbcn import ops
from mmbcn.ops import backends
from mmbcn.ops.call import BCNCall

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BUILT = ops.BACKENDS['cpu'].unavailable() is None


def call(x, mode='batch', dtype=None, synchronized=False):
    c = x.shape[1]
    dtype = dtype or x.dtype
    one = torch.ones(c, dtype=dtype)
    return BCNCall(x, torch.zeros(c, dtype=dtype), one.clone(),
                   torch.zeros((), dtype=torch.long), one.clone(),
                   torch.zeros(c, dtype=dtype), torch.ones(2, dtype=dtype),
                   torch.zeros(2, dtype=dtype), 2, mode, 0.1, 1e-5,
                   synchronized)


@pytest.fixture
def requested():
    previous = ops.get_backend()
    yield ops.set_backend
    ops.set_backend(previous)


@pytest.mark.skipif(not CPU_BUILT, reason='native kernel not built')
def test_auto_picks_the_native_kernel_where_it_serves(requested):
    requested('auto')
    x = torch.randn(2, 4, 3, 3)
    assert backends.select(call(x)).name == 'cpu'
    assert backends.select(call(x.double())).name == 'cpu'
    for other in (call(x.contiguous(memory_format=torch.channels_last)),
                  call(x.bfloat16(), dtype=torch.float32),
                  call(x, dtype=torch.float64),
                  call(x, synchronized=True)):
        assert backends.select(other).name == 'python'


@pytest.mark.parametrize('x,kwargs,reason', [
    (torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last),
     {}, 'contiguous input, got a channels_last one'),
    (torch.randn(2, 4, 3, 3).bfloat16(), dict(dtype=torch.bfloat16),
     'float32, float64, got torch.bfloat16'),
    (torch.randn(2, 4, 3, 3), dict(dtype=torch.float64),
     'batch_weight is torch.float64 and the input torch.float32'),
    (torch.randn(2, 4, 3, 3), dict(synchronized=True),
     'does not synchronize statistics'),
])
@pytest.mark.skipif(not CPU_BUILT, reason='native kernel not built')
def test_forced_backend_refuses_with_the_reason(requested, x, kwargs,
                                                reason):
    requested('cpu')
    with pytest.raises(ops.BackendError, match="backend 'cpu'.*" + reason):
        backends.select(call(x, **kwargs))


def test_unknown_backend_names_the_choices(requested):
    with pytest.raises(ops.BackendError, match='auto, python, cpu, triton'):
        requested('cuda')


def test_triton_on_cpu_needs_the_interpreter(requested):
    if ops.BACKENDS['triton'].unavailable():
        pytest.skip(ops.BACKENDS['triton'].unavailable())
    requested('triton')
    x = torch.randn(2, 4, 3, 3)
    env = os.environ.get('TRITON_INTERPRET')
    try:
        os.environ['TRITON_INTERPRET'] = '0'
        with pytest.raises(ops.BackendError, match='TRITON_INTERPRET=1'):
            backends.select(call(x))
    finally:
        os.environ['TRITON_INTERPRET'] = env or '1'
    assert backends.select(call(x)).name == 'triton'


# Run with the OpenMMLab packages made unimportable: mmbcn.ops needs torch
# alone.
TORCH_ALONE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmengine', 'mmdet', 'mmseg'):
            raise ModuleNotFoundError(f'blocked {name}', name=name)
sys.meta_path.insert(0, Block())
"""


def run_torch_alone(code, env=None):
    out = subprocess.run([sys.executable, '-c', TORCH_ALONE + code],
                         cwd=ROOT, env={**os.environ, **(env or {})},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _describe(env):
    return run_torch_alone(
        'import torch, mmbcn.ops as o\n'
        'print(o.describe(torch.ones(2, 4, 3)))', env)


@pytest.mark.skipif(not CPU_BUILT, reason='native kernel not built')
def test_environment_switches():
    assert _describe({}).startswith('cpu [requested auto]')
    assert _describe({'MMBCN_NATIVE': '0'}).startswith('python')
    assert _describe({'MMBCN_BACKEND': 'python'}).startswith(
        'python [requested python]')


def test_op_imports_with_torch_alone():
    """mmbcn.ops needs neither mmcv, mmengine, mmdet nor mmseg."""
    code = '''
import torch
from mmbcn.ops import batch_channel_norm
x = torch.randn(2, 4, 5)
c = torch.ones(4)
y = batch_channel_norm(x, c * 0, c.clone(), torch.tensor(0), c, c * 0,
                       torch.ones(2), torch.zeros(2), 2, 'batch', 0.1)
assert y.shape == x.shape
assert not any(m.split('.')[0] in ('mmcv', 'mmengine', 'mmdet', 'mmseg')
               for m in sys.modules)
print('ok')
'''
    assert run_torch_alone(code).strip() == 'ok'


def test_op_validates_mode_and_rate():
    x = torch.randn(2, 4, 3)
    c = torch.ones(4)
    args = (x, c * 0, c.clone(), torch.tensor(0), c, c * 0, torch.ones(2),
            torch.zeros(2), 2)
    with pytest.raises(ValueError, match="mode='train'"):
        ops.batch_channel_norm(*args, mode='train')
    with pytest.raises(ValueError, match="needs Algorithm 1's rate"):
        ops.batch_channel_norm(*args, mode='estimate')


def test_auto_says_when_the_native_kernel_is_missing(requested,
                                                     monkeypatch):
    """Without the built kernel, auto runs the reference and says so once
    instead of falling back in silence."""
    from mmbcn.ops import cpu_backend
    requested('auto')
    monkeypatch.setattr(cpu_backend, '_bcn_cpu', None)
    monkeypatch.setattr(cpu_backend, '_IMPORT_ERROR', 'not built here')
    monkeypatch.setattr(backends, '_warned', set())
    x = torch.randn(2, 4, 3, 3)
    with pytest.warns(UserWarning, match="'cpu' is unavailable.*not built"):
        assert backends.select(call(x)).name == 'python'
