# Copyright (c) mmbcn contributors. All rights reserved.
"""Build from a registry under a default scope for that call only.

mmdet's and mmseg's components register in their own registries: a config
like ``dict(type='MaskRCNN')`` builds only where ``mmdet`` is the default
scope. Setting a global default scope (``init_default_scope``) would change
what later builds in the same process resolve to; these helpers set it for
one build and restore it. mmengine is imported when they are called.
"""
from typing import Any, Optional


def scoped_build(cfg: Any, scope: Optional[str], registry: Any = None,
                 **kwargs) -> Any:
    """``registry.build(cfg)`` (default: mmengine's ``MODELS``) with
    ``scope`` (``'mmdet'``, ``'mmseg'``; ``None``: leave it as it is) as
    the default scope during the build only."""
    from mmengine.registry import MODELS, DefaultScope
    registry = MODELS if registry is None else registry
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg, **kwargs)


def build_model(cfg: Any, scope: Optional[str] = None) -> Any:
    """The model of a whole config (``cfg.model``), built in ``scope``,
    by default the config's ``default_scope``."""
    if scope is None:
        scope = cfg.get('default_scope')
    return scoped_build(cfg['model'], scope)
