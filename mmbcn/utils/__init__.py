# Copyright (c) mmbcn contributors. All rights reserved.
"""Small helpers shared by the package and its tools: atomic file outputs,
the check that an output never replaces an input, config-tree walks,
markdown tables and scoped builds. Importing it needs the standard library
only (and torch or mmengine where a helper is called)."""
from .atomic import (atomic_outputs, atomic_save, current_umask,
                     remove_stale_temporaries)
from .config_tree import (child_path, is_type, path_keys, rewrite_dicts,
                          walk_dicts)
from .markdown import markdown_table
from .output_paths import OutputPathError, check_outputs
from .scoped_build import build_model, scoped_build

__all__ = [
    'atomic_outputs', 'atomic_save', 'current_umask',
    'remove_stale_temporaries', 'OutputPathError',
    'check_outputs', 'child_path', 'is_type', 'path_keys', 'rewrite_dicts',
    'walk_dicts', 'markdown_table', 'build_model', 'scoped_build'
]
