# Copyright (c) mmbcn contributors. All rights reserved.
"""Copy a folded model's weights into the model its folded config builds.

The two models are built by the same code, so their modules come in the
same order; only names may differ (a former BCN is ``bcn1`` in the folded
model, its GroupNorm ``gn1`` in the model built from the GN config).
Modules that hold state are paired in order and must agree in type,
geometry and state names; the one allowed difference is a convolution bias
the folded model does not have (a WS convolution without a BCN after it,
built as ``FoldedConv``), which is set to zero.
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

_GEOMETRY = ('in_channels', 'out_channels', 'kernel_size', 'stride',
             'padding', 'dilation', 'groups', 'padding_mode', 'num_groups',
             'num_channels', 'eps', 'affine', 'in_features', 'out_features',
             'num_features')


class StateTransferError(ValueError):
    """The folded model and the config-built model do not correspond."""


def _own_state(module: nn.Module) -> Dict[str, Tensor]:
    state = dict(module.named_parameters(recurse=False))
    state.update((name, buf)
                 for name, buf in module.named_buffers(recurse=False)
                 if name not in module._non_persistent_buffers_set)
    return state


def _stateful(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if _own_state(m)]


@torch.no_grad()
def transfer_state(source: nn.Module, target: nn.Module) -> int:
    """Copy every parameter and persistent buffer of ``source`` (a folded
    model) into ``target`` (built from the folded config); returns the
    number of modules paired.

    Raises:
        StateTransferError: naming the first pair of modules that differ.
    """
    src, dst = _stateful(source), _stateful(target)
    for (s_name, s_mod), (d_name, d_mod) in zip(src, dst):
        where = f'folded {s_name!r} vs config-built {d_name!r}'
        if type(s_mod) is not type(d_mod):
            raise StateTransferError(
                f'{where}: {type(s_mod).__name__} vs '
                f'{type(d_mod).__name__}')
        for attr in _GEOMETRY:
            if getattr(s_mod, attr, None) != getattr(d_mod, attr, None):
                raise StateTransferError(
                    f'{where}: {attr} {getattr(s_mod, attr, None)!r} vs '
                    f'{getattr(d_mod, attr, None)!r}')
        s_state, d_state = _own_state(s_mod), _own_state(d_mod)
        zero_bias = (isinstance(d_mod, nn.modules.conv._ConvNd)
                     and 'bias' in d_state and 'bias' not in s_state
                     and getattr(s_mod, 'bias', 0) is None)
        expected = set(s_state) | ({'bias'} if zero_bias else set())
        if expected != set(d_state):
            raise StateTransferError(
                f'{where}: state {sorted(s_state)} vs {sorted(d_state)}')
        for name, value in d_state.items():
            if name == 'bias' and zero_bias:
                value.zero_()
            elif value.shape != s_state[name].shape:
                raise StateTransferError(
                    f'{where}: {name} of shape {tuple(s_state[name].shape)}'
                    f' vs {tuple(value.shape)}')
            else:
                value.copy_(s_state[name])
    if len(src) != len(dst):
        extra = (src if len(src) > len(dst) else dst)[min(len(src),
                                                          len(dst))]
        raise StateTransferError(
            f'the folded model has {len(src)} modules with state, the '
            f'config-built one {len(dst)} (first unpaired: {extra[0]!r})')
    return len(src)
