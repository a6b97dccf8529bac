# Copyright (c) mmbcn contributors. All rights reserved.
"""Write files so that a reader never sees a partial one.

Each output is written to a temporary file in its own folder and renamed
over the destination only when every output of the group is complete: a
full disk, an exception or a kill while writing leaves the destinations as
they were (the old file or none). The new files get the mode a plain
``open(path, 'w')`` would give them (``0o666`` minus the user's umask).
"""
import contextlib
import os
import os.path as osp
import tempfile
import threading
from typing import Any, Iterator, List

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temporary_beside(path: str) -> str:
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # the extension is kept last: tools that pick a format by it (Config)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.',
                               suffix='.part' + osp.splitext(path)[1],
                               dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0o600
    return tmp


@contextlib.contextmanager
def atomic_outputs(*paths: str) -> Iterator[List[str]]:
    """Temporary paths to write ``paths``' contents to; on a normal exit
    they are renamed onto ``paths`` (all of them), on an exception they are
    removed and ``paths`` are untouched.

    If a rename fails midway (rare: same folder, contents already on disk),
    the outputs already renamed are removed, so a folded config never
    points at a checkpoint that was not written.
    """
    temps = []
    try:
        for path in paths:
            temps.append(_temporary_beside(path))
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


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_outputs`)."""
    import torch
    with atomic_outputs(path) as (tmp, ):
        torch.save(obj, tmp)
