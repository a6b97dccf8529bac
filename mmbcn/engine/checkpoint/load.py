# Copyright (c) mmbcn contributors. All rights reserved.
"""Read a checkpoint with ``torch.load(weights_only=True)``, passed
explicitly, so that no environment variable
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) or default can turn the protection
off: unpickling runs no code from the file. Errors name the file."""
import io
import os
import os.path as osp
import pickle
from typing import Any, Union

import torch

from .plain_state import PlainStateError, decode


class CheckpointLoadError(RuntimeError):
    """A checkpoint is unreadable (truncated, not a torch file)."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint holds pickled objects beyond tensors and plain data."""


def load_weights_only(source: Union[str, bytes, io.IOBase],
                      map_location: Any = 'cpu',
                      name: str = None,
                      mmap: bool = False) -> Any:
    """The object in ``source`` (a path, bytes or a file object), read with
    ``weights_only=True``; mmbcn's plain-data encoding
    (:mod:`.plain_state`) is decoded.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        UnsafeCheckpointError: the file would need to unpickle other
            objects (possibly code); nothing of it was executed.
        CheckpointLoadError: the file is truncated, not a checkpoint (a web
            page, text, another format), or its mmbcn plain-data entries
            are malformed or nested beyond any real checkpoint.
    """
    if isinstance(source, str):
        name = name or source
        source = osp.expanduser(source)
        if not osp.isfile(source):
            raise FileNotFoundError(f'checkpoint {name!r} not found')
    elif isinstance(source, bytes):
        source = io.BytesIO(source)
    name = name or '<checkpoint>'
    _check_environment()
    not_torch = not_a_torch_file(source)
    if not_torch:
        raise CheckpointLoadError(
            f'{name}: not a PyTorch checkpoint: {not_torch}')
    try:
        obj = torch.load(source, map_location=map_location,
                         weights_only=True, mmap=mmap or None)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{name}: refused: it holds pickled objects that '
            'torch.load(weights_only=True) does not allow, and mmbcn never '
            f'loads checkpoints otherwise ({_first_line(err)}). '
            + _MMENGINE_HINT + 'If the file comes from a source you trust, '
            'load it once in Python and save only its tensors: '
            'torch.save({"state_dict": model.state_dict()}, path)') from err
    except Exception as err:
        raise CheckpointLoadError(
            f'{name}: not a readable PyTorch checkpoint (truncated or '
            f'another format): {type(err).__name__}: {_first_line(err)}'
        ) from err
    try:
        return decode(obj)
    except PlainStateError as err:
        raise CheckpointLoadError(
            f'{name}: {err}. Nothing of it was loaded; use another copy of '
            'the checkpoint') from err


def _head(source, size: int = 512) -> bytes:
    """The first bytes of a path or seekable file object (its position is
    kept)."""
    if isinstance(source, str):
        with open(source, 'rb') as f:
            return f.read(size)
    if hasattr(source, 'seek') and hasattr(source, 'tell'):
        where = source.tell()
        try:
            return source.read(size)
        finally:
            source.seek(where)
    return b''


def not_a_torch_file(source) -> str:
    """Why ``source`` cannot be a file of ``torch.save`` (a zip archive,
    a pickle or a tar archive for the legacy formats), or '' if it may be
    one: an empty file, a web page (an error or login page saved in place
    of a download), other text."""
    try:
        head = _head(source)
    except OSError:
        return ''  # torch.load reports it
    if not head:
        return 'the file is empty' if isinstance(source, str) else ''
    # a zip archive; the legacy format's pickled magic number (protocol
    # 2 or more: PROTO, else LONG); torch < 0.4's tar archive
    if head.startswith((b'PK', b'\x80', b'L')) or \
            head[257:262] == b'ustar':
        return ''
    text = head.lstrip().lower()
    if text.startswith((b'<!doctype html', b'<html', b'<head', b'<?xml')):
        return ('it is a web page (HTML/XML), e.g. an error or login page '
                'served in place of the file')
    if text[:1] in (b'{', b'['):
        return 'it is text (JSON?), not a file written by torch.save'
    return (f'it starts with {head[:16]!r}, not with the bytes of a file '
            'written by torch.save (a zip archive or a pickle)')


_MMENGINE_HINT = (
    'mmengine writes numpy, Counter and HistoryBuffer objects into its '
    "checkpoints unless the run has mmbcn's WeightsOnlyCheckpointHook: "
    "mmbcn's configs declare it in custom_hooks (keep it there when you "
    "override custom_hooks: dict(type='WeightsOnlyCheckpointHook')) and "
    "mmbcn's tools/train.py adds it. ")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ''


def _check_environment() -> None:
    """torch 2.13 honours ``weights_only=True`` when it is passed, whatever
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says; this guards against a torch
    whose ``load`` ignores the argument (the environment variable then
    becomes an error here instead of a silent unsafe load)."""
    if os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0').lower() in (
            '1', 'y', 'yes', 'true') and not _explicit_argument_wins():
        raise CheckpointLoadError(
            'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set and this torch lets '
            'it override weights_only=True: unset it to load checkpoints')


_EXPLICIT_WINS = None


def _explicit_argument_wins() -> bool:
    """Whether this torch keeps an explicit ``weights_only=True`` under
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (checked once, on a file holding
    an object that only a full unpickler accepts)."""
    global _EXPLICIT_WINS
    if _EXPLICIT_WINS is None:
        buffer = io.BytesIO()
        torch.save({'probe': _Probe()}, buffer)
        try:
            torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
            _EXPLICIT_WINS = False
        except pickle.UnpicklingError:
            _EXPLICIT_WINS = True
    return _EXPLICIT_WINS


class _Probe:
    """A harmless class a weights-only unpickler must refuse."""
