"""Run the repository's tools/*.py in-process or in subprocesses."""
import importlib.util
import os
import os.path as osp
import subprocess

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
HELPERS = osp.join(REPO, 'tests', 'helpers')


def load_tool(name):
    """Import tools/<name>.py as a module."""
    path = osp.join(REPO, 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'mmbcn_tool_{name}',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [HELPERS, REPO, env.get('PYTHONPATH', '')])
    return env


def run(cmd, env_extra=None, **kwargs):
    """Run a command from the repository root; fail with its output."""
    env = tool_env()
    env.update(env_extra or {})
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True,
                          capture_output=True, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f'{cmd} exited {proc.returncode}:\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc
