# Copyright (c) mmbcn contributors. All rights reserved.
"""The config of a folded model: the original config with GroupNorm for
BCN and plain convolutions (with a bias) for the convolutions before them.

After :func:`mmbcn.deploy.fold_bcn` a BCN+WS model is a GN model with plain
convolutions, except that every convolution before a former BCN carries a
bias (the batch step's shift ``b_c``, Eq. 13), which OpenMMLab components
do not give a convolution followed by a norm layer. ``conv_cfg=dict(type=
'FoldedConv')`` builds such a convolution: ``nn.Conv2d`` with a bias
whatever the component asks for.
"""
import copy
from typing import Any, List, Tuple

from mmengine.config import Config
from mmengine.registry import MODELS
from torch import nn

from mmbcn.cnn.bcn import BatchChannelNorm
from mmbcn.cnn.ws_conv import WSConv2d

FOLDED_CONV = 'FoldedConv'
BCN_TYPES = ('BCN', 'SyncBCN', BatchChannelNorm)
WS_CONV_TYPES = ('WSConv', 'ConvWS', WSConv2d)
PLAIN_CONV_TYPES = ('Conv', 'Conv2d', nn.Conv2d)
RATE_HOOK = 'BCNUpdateRateHook'


def folded_conv(*args, bias: Any = True, **kwargs) -> nn.Conv2d:
    """``conv_cfg=dict(type='FoldedConv')``: ``nn.Conv2d`` that always has
    a bias (``bias`` is accepted and ignored), where a folded model keeps
    the shift of BCN's batch step."""
    return nn.Conv2d(*args, bias=True, **kwargs)


if FOLDED_CONV not in MODELS.module_dict:
    MODELS.register_module(FOLDED_CONV, module=folded_conv)


def _is(cfg: Any, types: tuple) -> bool:
    return isinstance(cfg, dict) and any(
        cfg.get('type') is t or cfg.get('type') == t for t in types)


def _describe(cfg: dict) -> str:
    if cfg is None:
        return 'None'
    kind = cfg.get('type')
    kind = getattr(kind, '__name__', kind)
    args = ', '.join(f'{k}={v!r}' for k, v in cfg.items() if k != 'type')
    return f'{kind}({args})'


def group_norm_cfg(bcn_cfg: dict) -> dict:
    """GN config with BCN's groups (default 32), eps and requires_grad."""
    gn = dict(type='GN', num_groups=bcn_cfg.get('num_groups', 32))
    for key in ('eps', 'requires_grad'):
        if key in bcn_cfg:
            gn[key] = bcn_cfg[key]
    return gn


def _rewrite(node: Any, path: str, in_model: bool,
             changes: List[str]) -> Any:
    if isinstance(node, (list, tuple)):
        items = [_rewrite(v, f'{path}[{i}]', in_model, changes)
                 for i, v in enumerate(node)]
        return type(node)(items) if isinstance(node, tuple) else items
    if not isinstance(node, dict):
        return node
    if _is(node, BCN_TYPES):
        new = group_norm_cfg(node)
        changes.append(f'{path}: {_describe(node)} -> {_describe(new)}')
        return new
    if _is(node, WS_CONV_TYPES):
        new = dict(type=FOLDED_CONV)
        changes.append(f'{path}: {_describe(node)} -> {_describe(new)}')
        return new
    out = {
        key: _rewrite(value, f'{path}.{key}' if path else key, in_model
                      or key == 'model', changes)
        for key, value in node.items()
    }
    if in_model and _is(node.get('norm_cfg'), BCN_TYPES):
        conv = node.get('conv_cfg')
        if conv is None or _is(conv, PLAIN_CONV_TYPES):
            out['conv_cfg'] = dict(type=FOLDED_CONV)
            changes.append(f'{path}.conv_cfg: {_describe(conv)} -> '
                           f'{_describe(out["conv_cfg"])}')
    return out


def folded_config(cfg: Config) -> Tuple[Config, List[str]]:
    """A new config that builds ``cfg``'s model as :func:`fold_bcn` leaves
    it, and the list of changes made (one line each).

    * every ``BCN``/``SyncBCN`` config -> ``GN`` with the same
      ``num_groups``, ``eps`` and ``requires_grad``;
    * every WS conv config (``WSConv``, mmcv's ``ConvWS``) -> ``FoldedConv``,
      and so is a ``conv_cfg`` (``None`` or plain) next to a BCN
      ``norm_cfg`` inside ``model``;
    * ``BCNUpdateRateHook`` leaves ``custom_hooks`` (no BCN is left);
    * ``mmbcn.deploy`` joins ``custom_imports`` (it registers
      ``FoldedConv``).
    """
    changes: List[str] = []
    data = _rewrite(copy.deepcopy(cfg.to_dict()), '', False, changes)
    hooks = data.get('custom_hooks') or []
    kept = [h for h in hooks if not _is(h, (RATE_HOOK, ))]
    if len(kept) != len(hooks):
        data['custom_hooks'] = kept
        changes.append(f'custom_hooks: removed {RATE_HOOK}')
    imports = dict(data.get('custom_imports') or {})
    names = list(imports.get('imports') or [])
    for name in ('mmbcn', 'mmbcn.deploy'):
        if name not in names:
            names.append(name)
    imports['imports'] = names
    imports.setdefault('allow_failed_imports', False)
    if imports != data.get('custom_imports'):
        changes.append(f'custom_imports: imports={names}')
    data['custom_imports'] = imports
    return Config(data), changes
