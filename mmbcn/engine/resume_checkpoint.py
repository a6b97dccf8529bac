# Copyright (c) mmbcn contributors. All rights reserved.
"""Which checkpoint ``--resume`` (without a path) continues from."""
import os
import os.path as osp
import re
import warnings
from typing import List, Optional

from .weights_only_load import CheckpointLoadError, load_weights_only

_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def candidates(work_dir: str) -> List[str]:
    """The checkpoint ``last_checkpoint`` names, then every ``iter_N.pth`` /
    ``epoch_N.pth`` beside it or in ``work_dir``, newest (largest N)
    first."""
    named = None
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip() or None
    folders = {work_dir}
    if named:
        folders.add(osp.dirname(named) or work_dir)
    found = []
    for folder in folders:
        if osp.isdir(folder):
            for name in os.listdir(folder):
                match = _NAME.match(name)
                if match:
                    found.append((int(match[1]), osp.join(folder, name)))
    ordered = [path for _, path in sorted(found, reverse=True)]
    if named:
        ordered = [named] + [p for p in ordered
                             if osp.abspath(p) != osp.abspath(named)]
    return ordered


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint of ``work_dir`` that loads (weights only,
    memory-mapped: the check reads little); ``None`` if there is none.

    A newer checkpoint that is truncated or unreadable is skipped with a
    warning naming it and the one used instead.

    Raises:
        CheckpointLoadError: checkpoints exist but none loads (resuming from
            iteration 0 would silently discard the run).
    """
    broken = []
    for path in candidates(work_dir):
        try:
            if not osp.isfile(path):
                raise CheckpointLoadError(f'{path}: no such file')
            load_weights_only(path, 'cpu', mmap=True)
        except (CheckpointLoadError, OSError) as err:
            broken.append(f'{path} ({err})')
            continue
        if broken:
            warnings.warn(
                f'--resume: skipped {len(broken)} newer checkpoint(s) that '
                f'do not load: {"; ".join(broken)}. Resuming from {path}',
                stacklevel=2)
        return path
    if broken:
        raise CheckpointLoadError(
            f'--resume: no checkpoint in {work_dir} loads: '
            f'{"; ".join(broken)}. Remove them to start from scratch, or '
            'pass --resume PATH')
    return None
