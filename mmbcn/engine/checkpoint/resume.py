# Copyright (c) mmbcn contributors. All rights reserved.
"""Which checkpoint ``--resume`` (without a path) continues from."""
import os
import os.path as osp
import re
import warnings
from typing import List, Optional, Sequence

from .load import CheckpointLoadError, load_weights_only

_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def _same_folder(a: str, b: str) -> bool:
    return osp.realpath(a) == osp.realpath(b)


def candidates(work_dir: str, folders: Sequence[str] = ()) -> List[str]:
    """The checkpoint ``last_checkpoint`` names, then every ``iter_N.pth`` /
    ``epoch_N.pth`` in ``work_dir`` (and in ``folders``: where this run's
    checkpoint hook saves, if elsewhere), newest (largest N) first.

    ``last_checkpoint`` is followed only into these folders: a record that
    names a checkpoint elsewhere (a copied or moved work directory, another
    run's file) is ignored with a warning, and nothing is taken from the
    folder it names."""
    own = [work_dir] + [f for f in folders if f]
    named = None
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip() or None
    if named and not any(
            _same_folder(osp.dirname(named) or work_dir, folder)
            for folder in own):
        warnings.warn(
            f'--resume: {record} names {named}, which is not in the work '
            f'directory {work_dir}: ignored, resuming from the work '
            "directory's own checkpoints. To continue from that file, pass "
            f'--resume {named}', stacklevel=3)
        named = None
    found = []
    for folder in own:
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


def find_resume_checkpoint(work_dir: str,
                           folders: Sequence[str] = ()) -> Optional[str]:
    """The newest checkpoint of ``work_dir`` (or of ``folders``, where the
    run's checkpoint hook saves if not in the work directory) that loads
    (weights only, memory-mapped: the check reads little); ``None`` if
    there is none. Nothing outside these folders is resumed from, whatever
    ``last_checkpoint`` says (:func:`candidates`).

    A newer checkpoint that is truncated or unreadable is skipped with a
    warning naming it and the one used instead.

    Raises:
        CheckpointLoadError: checkpoints exist but none loads (resuming from
            iteration 0 would silently discard the run).
    """
    broken = []
    for path in candidates(work_dir, folders):
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
