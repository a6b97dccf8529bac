# Copyright (c) mmbcn contributors. All rights reserved.
"""Write files so that a reader never sees a partial one.

Each output is written to a temporary file in its own folder and renamed
over the destination only when every output of the group is complete: a
full disk, an exception or a kill while writing leaves the destinations as
they were (the old file or none). The new files get the mode a plain
``open(path, 'w')`` would give them (``0o666`` minus the user's umask).
A temporary file stays locked while it is written, so that clean-ups
remove only those whose writer is gone.
"""
import contextlib
import os
import os.path as osp
import re
import tempfile
import threading
from typing import Any, Iterator, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temporary_beside(path: str) -> Tuple[str, Optional[int]]:
    """A new temporary file beside ``path`` and a descriptor that holds an
    exclusive lock on it (None where the system has no ``flock``): while
    the lock is held, :func:`remove_stale_temporaries` leaves the file
    alone."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        # the extension is kept last: tools that pick a format by it
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.',
                                   suffix='.part' + osp.splitext(path)[1],
                                   dir=folder)
        if fcntl is None:
            os.close(fd)
            fd = None
            break
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _is_file_of(fd, tmp):
            break
        os.close(fd)  # removed before we locked it: make another
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0o600
    return tmp, fd


def _is_file_of(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def remove_stale_temporaries(folder: str, pattern: str) -> List[str]:
    """Remove the temporary files in ``folder`` whose names match the
    regular expression ``pattern`` and that no live writer holds (a writer
    killed while writing leaves its file unlocked); return their paths. A
    file that a process is writing (through :func:`atomic_outputs`) is
    kept. Where the system has no ``flock``, nothing is removed."""
    removed = []
    if fcntl is None or not osp.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        if not re.fullmatch(pattern, name):
            continue
        path = osp.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_file_of(fd, path):
                os.unlink(path)
                removed.append(path)
        except OSError:  # held by a live writer (or already gone)
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_outputs(*paths: str) -> Iterator[List[str]]:
    """Temporary paths to write ``paths``' contents to; on a normal exit
    they are renamed onto ``paths`` (all of them), on an exception they are
    removed and ``paths`` are untouched. Each temporary file is locked
    (``flock``) until then, so that a clean-up of temporary files left by
    a killed writer (:func:`remove_stale_temporaries`) never removes one
    being written.

    If a rename fails midway (rare: same folder, contents already on disk),
    the outputs already renamed are removed, so a folded config never
    points at a checkpoint that was not written.
    """
    temps, locks = [], []
    try:
        for path in paths:
            tmp, fd = _temporary_beside(path)
            temps.append(tmp)
            locks.append(fd)
        yield list(temps)
        for tmp in temps:
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        placed = []
        try:
            for tmp, path in zip(temps, paths):
                os.replace(tmp, path)
                placed.append(path)
        except BaseException:
            for path in placed:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for fd in locks:
            if fd is not None:
                os.close(fd)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_outputs`)."""
    import torch
    with atomic_outputs(path) as (tmp, ):
        torch.save(obj, tmp)
