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

from mmbcn.cnn import CONV_LAYERS, NORM_LAYERS
from mmbcn.engine.update_rate_hook import BCNUpdateRateHook
from mmbcn.ops import BatchChannelNorm, WSConv2d
from mmbcn.utils.config_tree import (child_path, is_type, path_keys,
                                     rewrite_dicts)

FOLDED_CONV = 'FoldedConv'
BCN_TYPES = (*NORM_LAYERS, BatchChannelNorm)
WS_CONV_TYPES = (*CONV_LAYERS, 'ConvWS', WSConv2d)  # and mmcv's ConvWS
PLAIN_CONV_TYPES = ('Conv', 'Conv2d', nn.Conv2d)
RATE_HOOK = BCNUpdateRateHook.__name__  # its registered name


def folded_conv(*args, bias: Any = True, **kwargs) -> nn.Conv2d:
    """``conv_cfg=dict(type='FoldedConv')``: ``nn.Conv2d`` that always has
    a bias (``bias`` is accepted and ignored), where a folded model keeps
    the shift of BCN's batch step."""
    return nn.Conv2d(*args, bias=True, **kwargs)


if FOLDED_CONV not in MODELS.module_dict:
    MODELS.register_module(FOLDED_CONV, module=folded_conv)


def _describe(cfg: dict) -> str:
    if cfg is None:
        return 'None'
    kind = cfg.get('type')
    kind = getattr(kind, '__name__', kind)
    args = ', '.join(f'{k}={v!r}' for k, v in cfg.items() if k != 'type')
    return f'{kind}({args})'


def is_bcn_cfg(cfg: Any) -> bool:
    """Whether ``cfg`` is a ``BCN``/``SyncBCN`` norm config."""
    return is_type(cfg, BCN_TYPES)


def group_norm_cfg(bcn_cfg: dict) -> dict:
    """GN config with BCN's groups (default 32), eps and requires_grad."""
    gn = dict(type='GN', num_groups=bcn_cfg.get('num_groups', 32))
    for key in ('eps', 'requires_grad'):
        if key in bcn_cfg:
            gn[key] = bcn_cfg[key]
    return gn


def _folded_node(path: str, node: dict, changes: List[str]) -> Any:
    """One node of :func:`folded_config`'s rewrite (see there)."""
    if is_bcn_cfg(node):
        new = group_norm_cfg(node)
    elif is_type(node, WS_CONV_TYPES):
        new = dict(type=FOLDED_CONV)
    else:
        conv = node.get('conv_cfg')
        if ('model' in path_keys(path) and is_bcn_cfg(node.get('norm_cfg'))
                and (conv is None or is_type(conv, PLAIN_CONV_TYPES))):
            new = dict(conv_cfg=dict(type=FOLDED_CONV))
            changes.append(f'{child_path(path, "conv_cfg")}: '
                           f'{_describe(conv)} -> '
                           f'{_describe(new["conv_cfg"])}')
            return dict(node, **new)
        return node
    changes.append(f'{path}: {_describe(node)} -> {_describe(new)}')
    return new


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
    data = rewrite_dicts(
        copy.deepcopy(cfg.to_dict()),
        lambda path, node: _folded_node(path, node, changes))
    hooks = data.get('custom_hooks') or []
    kept = [h for h in hooks if not is_type(h, (RATE_HOOK, BCNUpdateRateHook))]
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
