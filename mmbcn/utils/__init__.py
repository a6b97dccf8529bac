# Copyright (c) mmbcn contributors. All rights reserved.
"""Small helpers shared by the tools: atomic file outputs and the check
that an output never replaces an input."""
from .atomic import atomic_outputs, atomic_save, current_umask
from .output_paths import OutputPathError, check_outputs

__all__ = [
    'atomic_outputs', 'atomic_save', 'current_umask', 'OutputPathError',
    'check_outputs'
]
