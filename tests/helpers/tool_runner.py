"""Run the repository's tools/*.py in-process or in subprocesses."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HELPERS = osp.join(REPO, 'tests', 'helpers')


def load_tool(name):
    """Import tools/<name>.py (``'train'``, ``'deploy/fold_bcn'``) as a
    module. Its folder joins the end of ``sys.path``, so that what it
    imports from beside it (the benchmarks' ``bench_common``) is found as
    when it runs as a script, without shadowing installed modules."""
    path = osp.join(REPO, 'tools', f'{name}.py')
    folder = osp.dirname(path)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(
        'mmbcn_tool_' + name.replace('/', '_'), path)
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
