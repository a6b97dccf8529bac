# Copyright (c) mmbcn contributors. All rights reserved.
"""One training run at a time per work directory.

Two runs writing into one work directory replace each other's
``iter_N.pth``, ``last_checkpoint`` and config dump without a word.
``tools/train.py`` holds an exclusive lock (``flock``) on
``WORK_DIR/.mmbcn_train.lock`` for the whole run; a second run into the same
directory stops before it writes anything, naming the directory and the run
that holds it. The system releases the lock when the holder exits, however
it exits, so a killed run never leaves the directory locked.
"""
import contextlib
import datetime
import os
import os.path as osp
import socket
import warnings
from typing import Iterator

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock
    fcntl = None

LOCK_NAME = '.mmbcn_train.lock'


class WorkDirBusyError(RuntimeError):
    """Another live training run holds the work directory."""


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[str]:
    """Hold ``work_dir``'s training lock (creating the folder) while the
    block runs; yields the lock file's path.

    Raises:
        WorkDirBusyError: another process holds it.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkDirBusyError(_busy_message(work_dir, path)) \
                    from None
            except OSError as err:  # a file system without locks
                warnings.warn(
                    f'{path}: cannot lock the work directory ({err}); a '
                    'second training run into it would not be detected',
                    stacklevel=3)
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode('utf-8'))
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder() -> str:
    started = datetime.datetime.now().isoformat(timespec='seconds')
    return (f'process {os.getpid()} on {socket.gethostname()}, started '
            f'{started}')


def _busy_message(work_dir: str, path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            holder = f.read().strip() or 'another process'
    except OSError:
        holder = 'another process'
    return (f'--work-dir {work_dir!r} is in use by another training run '
            f'({holder}; it holds {path}): a second run there would '
            'replace its checkpoints and logs. Wait for it to finish, or '
            'pass another --work-dir')
