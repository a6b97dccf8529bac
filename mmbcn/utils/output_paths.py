# Copyright (c) mmbcn contributors. All rights reserved.
"""Refuse output paths that would replace a tool's own inputs."""
import os.path as osp
from typing import Dict


class OutputPathError(ValueError):
    """An output path names an input, or another output."""


def _same(a: str, b: str) -> bool:
    if osp.realpath(a) == osp.realpath(b):
        return True
    try:
        return osp.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_outputs(outputs: Dict[str, str], inputs: Dict[str, str]) -> None:
    """Raise :class:`OutputPathError` if an output is one of ``inputs`` or
    two outputs are the same file. Both map a role (``'OUT'``,
    ``'config'``) to a path; the message names the roles and the path."""
    names = list(outputs.items())
    for i, (role, path) in enumerate(names):
        for in_role, in_path in inputs.items():
            if in_path and _same(path, in_path):
                raise OutputPathError(
                    f'{role} {path!r} is the {in_role} {in_path!r}: '
                    f'writing it would destroy the {in_role}; choose '
                    'another output path')
        for other_role, other in names[i + 1:]:
            if _same(path, other):
                raise OutputPathError(
                    f'{role} and {other_role} are the same file '
                    f'{path!r}; choose different paths')
