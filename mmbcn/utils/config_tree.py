# Copyright (c) mmbcn contributors. All rights reserved.
"""Walk and rewrite config trees (nested dicts, lists and tuples, as
``Config.to_dict()`` or a ``ConfigDict`` holds them).

A node's path names it as a message would: ``model.backbone.norm_cfg``,
``custom_hooks[0]``. Needs the standard library only.
"""
import re
from typing import Any, Callable, Container, Iterator, Optional, Tuple


def child_path(path: str, key: Any) -> str:
    """The path of ``key`` (a dict key or a list index) under ``path``."""
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else str(key)


def path_keys(path: str) -> list:
    """The dict keys along ``path`` (list indices left out):
    ``'model.roi_head[0].x'`` -> ``['model', 'roi_head', 'x']``."""
    return [key for key in re.split(r'\.|\[\d+\]', path) if key]


def is_type(cfg: Any, types: tuple) -> bool:
    """Whether ``cfg`` is a config dict whose ``type`` is one of ``types``
    (names or the classes themselves)."""
    return isinstance(cfg, dict) and any(
        cfg.get('type') is t or cfg.get('type') == t for t in types)


def walk_dicts(node: Any, path: str = '',
               keys: Optional[Container] = None
               ) -> Iterator[Tuple[str, dict]]:
    """``(path, dict)`` for every dict in ``node``, parents before their
    children, in key order. With ``keys``, only the values of those keys
    (and the items of lists under them) are entered below the top."""
    if isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk_dicts(value, child_path(path, i), keys)
        return
    if not isinstance(node, dict):
        return
    yield path, node
    for key, value in node.items():
        if keys is None or key in keys:
            yield from walk_dicts(value, child_path(path, key), keys)


def rewrite_dicts(node: Any, fn: Callable[[str, dict], Any],
                  path: str = '') -> Any:
    """A copy of ``node`` in which every dict ``d`` is replaced by
    ``fn(path, d)`` (return ``d`` itself to keep it), parents first; the
    walk then enters what ``fn`` returned. Lists stay lists and tuples
    tuples; ``node`` is not modified."""
    if isinstance(node, (list, tuple)):
        items = [rewrite_dicts(value, fn, child_path(path, i))
                 for i, value in enumerate(node)]
        return tuple(items) if isinstance(node, tuple) else items
    if not isinstance(node, dict):
        return node
    node = fn(path, node)
    if not isinstance(node, dict):
        return node
    return {key: rewrite_dicts(value, fn, child_path(path, key))
            for key, value in node.items()}
