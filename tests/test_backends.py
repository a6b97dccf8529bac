"""The backend table of mmbcn.ops and selection from it: what ``auto``
picks, forced backends that refuse with the reason (an undeclared mode
included), the environment switches, the mode table shared with the
kernels, a backend added the documented way (tests/helpers/
dummy_backend.py) joining names, ``auto`` and the backend-parametrized
tests, and the op importing with torch alone."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from backend_steps import backend_params, use_backend
from mmbcn import ops
from mmbcn.ops import backends
from mmbcn.ops.call import MODE_CODES, BCNCall
from torch_alone import BLOCK_OPENMMLAB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = os.path.join(ROOT, 'tests', 'helpers')
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


@pytest.mark.skipif(not CPU_BUILT, reason='native kernel not built')
def test_auto_picks_the_native_kernel_where_it_serves():
    x = torch.randn(2, 4, 3, 3)
    with use_backend('auto'):
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
def test_forced_backend_refuses_with_the_reason(x, kwargs, reason):
    with use_backend('cpu'), pytest.raises(ops.BackendError,
                                           match="backend 'cpu'.*" + reason):
        backends.select(call(x, **kwargs))


def test_unknown_backend_names_the_choices():
    with pytest.raises(ops.BackendError, match='auto, python, cpu, triton'):
        ops.set_backend('cuda')
    assert ops.get_backend() != 'cuda'


def test_triton_on_cpu_needs_the_interpreter():
    if ops.BACKENDS['triton'].unavailable():
        pytest.skip(ops.BACKENDS['triton'].unavailable())
    x = torch.randn(2, 4, 3, 3)
    env = os.environ.get('TRITON_INTERPRET')
    with use_backend('triton'):
        try:
            os.environ['TRITON_INTERPRET'] = '0'
            with pytest.raises(ops.BackendError, match='TRITON_INTERPRET=1'):
                backends.select(call(x))
        finally:
            os.environ['TRITON_INTERPRET'] = env or '1'
        assert backends.select(call(x)).name == 'triton'


@pytest.mark.parametrize('name', backends.names())
def test_an_undeclared_mode_is_refused_by_name(name):
    """A mode a backend does not declare is a refusal naming both, never
    a lookup error in its code; under auto, when no backend serves it,
    the error lists every backend's reason."""
    x = torch.randn(2, 4, 3, 3)
    with use_backend(name), pytest.raises(
            ops.BackendError, match=f"backend '{name}'.*got mode 'shadow'"):
        backends.select(call(x, mode='shadow'))
    with use_backend('auto'), pytest.raises(
            ops.BackendError, match="no BCN backend.*python: it serves "
            "modes batch, estimate, fixed, got mode 'shadow'"):
        backends.select(call(x, mode='shadow'))


def test_mode_codes_match_the_cpu_kernel_source():
    """csrc/bcn_cpu.cpp's Mode enum holds the codes of call.py's table
    (the Triton kernels import the table itself)."""
    source = pathlib.Path(ROOT, 'mmbcn', 'ops', 'csrc',
                          'bcn_cpu.cpp').read_text()
    enum = re.search(r'enum Mode : int64_t \{([^}]*)\}', source).group(1)
    codes = {name.lower(): int(code)
             for name, code in re.findall(r'k(\w+) = (\d+)', enum)}
    assert codes == MODE_CODES


def run_torch_alone(code, env=None):
    out = subprocess.run([sys.executable, '-c', BLOCK_OPENMMLAB + code],
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


def test_auto_says_when_the_native_kernel_is_missing(monkeypatch):
    """Without the built kernel, auto runs the reference and says so once
    instead of falling back in silence."""
    from mmbcn.ops import cpu_backend
    monkeypatch.setattr(cpu_backend, '_bcn_cpu', None)
    monkeypatch.setattr(cpu_backend, '_IMPORT_ERROR', 'not built here')
    monkeypatch.setattr(backends, '_warned', set())
    x = torch.randn(2, 4, 3, 3)
    with use_backend('auto'), pytest.warns(
            UserWarning, match="'cpu' is unavailable.*not built"):
        assert backends.select(call(x)).name == 'python'


# ------------------------------------------------------ adding a backend

@pytest.fixture
def table():
    """The backend table, restored after the test."""
    saved = dict(ops.BACKENDS)
    yield ops.BACKENDS
    ops.BACKENDS.clear()
    ops.BACKENDS.update(saved)


def test_a_registered_backend_is_selected_and_refuses_by_name(table):
    """Declared and registered (the documented steps, nothing else): it
    is a name set_backend accepts, auto's first choice where it serves,
    passed over where not, refused by name when forced outside what it
    declares, and a parameter of the backend-parametrized tests."""
    served = []

    def forward(c):
        served.append(c.mode)
        return table['python'].forward(c)

    ops.register_backend(ops.Backend(
        'narrow', forward, devices={'cpu'}, dtypes={torch.float64},
        modes={'fixed', 'batch'}, priority=50))
    assert backends.names()[0] == 'narrow'
    assert 'narrow' in [p.id for p in backend_params()]
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with use_backend('auto'):
        assert backends.select(call(x)).name == 'narrow'
        assert backends.select(call(x, mode='estimate')).name != 'narrow'
        assert backends.select(call(x.float())).name != 'narrow'
    with use_backend('narrow'):
        c = torch.ones(4, dtype=torch.float64)
        y = ops.batch_channel_norm(x, c * 0, c.clone(), torch.tensor(0), c,
                                   c * 0, c[:2], c[:2] * 0, 2, 'batch', 0.1)
        assert served == ['batch'] and y.shape == x.shape
        for bad, reason in [
            (call(x, mode='estimate'),
             "it serves modes batch, fixed, got mode 'estimate'"),
            (call(x.float()), 'it serves float64, got torch.float32'),
            (call(x.to('meta')), 'it serves cpu tensors, got meta'),
        ]:
            with pytest.raises(ops.BackendError, match="backend 'narrow'.*" +
                               re.escape(reason)):
                backends.select(bad)


def _with_dummy(args, env=None):
    """Run ``args`` in a process where tests/helpers is importable."""
    path = os.pathsep.join([HELPERS, os.environ.get('PYTHONPATH', '')])
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': path,
                              'TRITON_INTERPRET': '1', **(env or {})})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_mmbcn_backend_and_auto_take_a_registered_backend():
    code = ('import torch, dummy_backend, mmbcn.ops as o\n'
            'x = torch.ones(2, 4, 3)\n'
            'print(o.describe(x))\n'
            "o.set_backend('auto')\n"
            'print(o.describe(x))\n')
    forced, auto = _with_dummy([sys.executable, '-c', code],
                               {'MMBCN_BACKEND': 'dummy'}).splitlines()
    assert forced.startswith('dummy [requested dummy]')
    assert auto.startswith('dummy [requested auto]')


@pytest.mark.slow
def test_the_backend_parametrized_tests_run_a_registered_backend():
    """``pytest -p dummy_backend``: the contract and paper tests run the
    dummy backend without a line of them changed."""
    out = _with_dummy([
        sys.executable, '-m', 'pytest', '-p', 'dummy_backend', '-q',
        '-p', 'no:cacheprovider', '-n', '0', '-k', 'dummy',
        'tests/test_op_contract.py',
        'tests/test_bcn.py'
    ])
    summary = out.strip().splitlines()[-1]
    assert int(re.search(r'(\d+) passed', summary).group(1)) >= 50, summary
    assert 'failed' not in summary and 'error' not in summary, summary
