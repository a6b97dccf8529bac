# Copyright (c) mmbcn contributors. All rights reserved.
"""Worker processes, one per run: started all at once or one after the
other, each with its own log and thread count, watched with a progress
line; the first that fails stops the others and names its log."""
import os
import re
import subprocess
import sys
import time
from typing import Callable, List, NamedTuple, Optional


class Job(NamedTuple):
    name: str  # in messages and the progress line
    cmd: List[str]
    log: str  # the file that receives its output


class ProgressLine:
    """Prints ``text`` when it differs from the line printed last, at most
    once per ``interval`` seconds (the first time ``interval`` seconds
    after it is made): a run that waits prints nothing."""

    def __init__(self, interval: float = 60, clock=time.monotonic,
                 stream=None):
        self.interval = interval
        self.clock = clock
        self.stream = stream
        self.last = clock()
        self.printed = None

    def update(self, text: str) -> bool:
        """Print ``text`` if it is due; return whether it was printed."""
        if text == self.printed or self.clock() - self.last < self.interval:
            return False
        print(text, file=self.stream or sys.stdout, flush=True)
        self.printed, self.last = text, self.clock()
        return True


def log_progress(log_path: str) -> str:
    """'iter i/N' from the latest training line of a log ('starting'
    before the first one)."""
    try:
        with open(log_path, errors='replace') as f:
            text = f.read()[-20000:]
    except OSError:
        return ''
    found = re.findall(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]', text)
    return f'iter {found[-1][0]}/{found[-1][1]}' if found else 'starting'


def worker_env(repo: str, threads: Optional[int]) -> dict:
    """The environment of the workers: ``repo`` importable, ``threads``
    threads (None: torch's default)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (repo, env.get('PYTHONPATH')) if p)
    if threads:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    return env


def run_jobs(jobs: List[Job], repo: str, concurrent: bool,
             threads: Optional[int], what: str = 'training',
             on_done: Optional[Callable[[Job], None]] = None,
             progress: Optional[ProgressLine] = None) -> None:
    """Run ``jobs`` in ``repo``, all at once when ``concurrent`` else one
    after the other; ``on_done(job)`` after each that succeeds. The first
    that fails stops the others; exits with the end of its log."""
    env = worker_env(repo, threads)
    progress = progress or ProgressLine()
    pending, running = list(jobs), {}

    def start(job):
        log = open(job.log, 'w')
        print(f'[{job.name}] {what}, log: {job.log}', flush=True)
        running[job.name] = (subprocess.Popen(
            job.cmd, cwd=repo, env=env, stdout=log,
            stderr=subprocess.STDOUT), log, job)

    for _ in range(len(pending) if concurrent else min(1, len(pending))):
        start(pending.pop(0))
    while running:
        time.sleep(1)
        for name, (proc, log, job) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                for other, _, _ in running.values():
                    other.terminate()
                with open(job.log, errors='replace') as f:
                    tail = f.read()[-3000:]
                raise SystemExit(f'{name} {what} failed ({proc.returncode})'
                                 f'; end of {job.log}:\n{tail}')
            if on_done is not None:
                on_done(job)
            if pending:
                start(pending.pop(0))
        if running:
            progress.update(f'  {what}: ' + ' | '.join(
                f'{name} {log_progress(job.log)}'
                for name, (_, _, job) in running.items()))
