# Copyright (c) mmbcn contributors. All rights reserved.
r"""Deploy-time folding: BCN's batch step and WS go into the convolution
before them, leaving a GroupNorm.

Equation numbers refer to Qiao et al., "Rethinking Normalization and
Elimination Singularity in Neural Networks" (Sec. 3).

In eval mode the batch step (Eq. 13) normalizes with fixed statistics, so
it is a per-channel affine of its input:

    x_dot_c = a_c * x_c + b_c,
    a_c = gamma^b_c / sqrt(running_var_c + eps),
    b_c = beta^b_c - running_mean_c * a_c.

A convolution ``z_c = W_hat_c * x + bias_c`` (``W_hat`` the standardized
weight of a WS convolution, the raw weight otherwise) followed by it is
the plain convolution

    W'_c = a_c * W_hat_c,   bias'_c = a_c * bias_c + b_c  (bias_c = 0 if none),

and what remains of BCN is the group step (Eq. 15), which is
``nn.GroupNorm(G, C, eps)`` once the per-group affine gamma^c_g, beta^c_g is
repeated over the C/G channels of group g.

A BCN is folded only where the model's code is known to feed the
convolution's output to that BCN and nowhere else: mmcv ``ConvModule``
(``conv`` directly followed by ``norm``), the mmdet/mmseg ResNet
``BasicBlock``/``Bottleneck`` (``convK`` -> ``normK``) and stem
(``conv1`` -> ``norm1``), and ``nn.Sequential(..., conv, BCN, ...)``. Each
of these is recognised by its ``forward`` being the library's own, so a
subclass that rewrites ``forward`` is not trusted. Every other BCN, and
every WS convolution that cannot be replaced, is listed in the returned
report and left as it is (still correct, only not faster).
"""
import dataclasses
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from mmbcn.ops import BatchChannelNorm, WSConv2d, standardize_weight
from mmbcn.ops.moment_affine import batch_affine

_PLAIN_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

# (conv attribute or None, norm attribute, reason when conv is None)
Pair = Tuple[Optional[str], str, Optional[str]]


class Unfoldable(ValueError):
    """Why a module cannot be folded (recorded in :class:`FoldReport`)."""


@dataclasses.dataclass
class FoldReport:
    """What :func:`fold_bcn` did.

    Attributes:
        folded: ``(conv, norm)`` module paths: the convolution now carries
            the batch step (and WS) and the BCN became ``nn.GroupNorm``.
        standardized: WS convolutions with no foldable BCN after them,
            replaced by plain convolutions holding the standardized weight.
        unfoldable: ``(module path, reason)`` of every BCN and WS
            convolution left unchanged.
    """
    folded: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    standardized: List[str] = dataclasses.field(default_factory=list)
    unfoldable: List[Tuple[str, str]] = dataclasses.field(
        default_factory=list)

    @property
    def complete(self) -> bool:
        """True when nothing was left unfolded."""
        return not self.unfoldable

    def to_dict(self) -> dict:
        return dict(
            folded=[list(p) for p in self.folded],
            standardized=list(self.standardized),
            unfoldable=[list(p) for p in self.unfoldable])

    def __str__(self) -> str:
        lines = [f'folded {len(self.folded)} BCN into their convolutions, '
                 f'replaced {len(self.standardized)} further WS '
                 f'convolutions, {len(self.unfoldable)} left unfolded']
        lines += [f'  unfoldable: {path}: {why}'
                  for path, why in self.unfoldable]
        return '\n'.join(lines)


# ------------------------------------------------------------ the algebra

def batch_step_affine(bcn: BatchChannelNorm) -> Tuple[Tensor, Tensor]:
    """``(a, b)`` of the eval-mode batch step (Eq. 13), in float64 on the
    CPU: ``a = gamma^b / sqrt(running_var + eps)``,
    ``b = beta^b - running_mean * a``."""
    return batch_affine(_f64(bcn.running_mean), _f64(bcn.running_var),
                        _f64(bcn.batch_weight), _f64(bcn.batch_bias), bcn.eps)


def _f64(t: Tensor) -> Tensor:
    """The folding arithmetic runs in float64 on the CPU (any device's
    model; some devices lack float64)."""
    return t.detach().cpu().double()


def group_step_module(bcn: BatchChannelNorm) -> nn.GroupNorm:
    """The group step (Eq. 15) as ``nn.GroupNorm``: the per-group
    gamma^c_g, beta^c_g repeated over the C/G channels of group g."""
    weight = bcn.weight.detach()
    per_group = bcn.num_features // bcn.num_groups
    norm = nn.GroupNorm(
        bcn.num_groups,
        bcn.num_features,
        eps=bcn.eps,
        device=weight.device,
        dtype=weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight.repeat_interleave(per_group))
        norm.bias.copy_(bcn.bias.detach().repeat_interleave(per_group))
    norm.weight.requires_grad_(bcn.weight.requires_grad)
    norm.bias.requires_grad_(bcn.bias.requires_grad)
    return norm.train(bcn.training)


def _plain_forwards() -> set:
    forwards = {cls.forward for cls in _PLAIN_CONVS.values()}
    try:
        from mmcv.cnn.bricks import wrappers
        forwards |= {wrappers.Conv2d.forward, wrappers.Conv3d.forward}
    except ImportError:  # pragma: no cover - mmcv is a dependency
        pass
    return forwards


def _mmcv_ws_classes() -> tuple:
    try:
        from mmcv.cnn.bricks.conv_ws import ConvAWS2d, ConvWS2d
    except ImportError:  # pragma: no cover
        return ()
    return ConvWS2d, ConvAWS2d


def _mmcv_ws_forward() -> Optional[Callable]:
    classes = _mmcv_ws_classes()
    return classes[0].forward if classes else None


def applied_weight(conv: nn.Module) -> Tuple[Tensor, bool]:
    """The weight ``conv`` applies, in float64 on the CPU, and whether it
    is a WS
    convolution (weight standardized at every forward).

    Raises:
        Unfoldable: ``conv`` is not a convolution whose forward is known.
    """
    kind = type(conv).__name__
    if not isinstance(conv, nn.modules.conv._ConvNd):
        raise Unfoldable(f'{kind} is not a convolution')
    if conv.transposed:
        raise Unfoldable(f'{kind} is a transposed convolution')
    if conv._forward_hooks or conv._forward_pre_hooks:
        raise Unfoldable(f'{kind} has forward hooks (e.g. spectral norm)')
    if parametrize.is_parametrized(conv):
        raise Unfoldable(f'{kind} has parametrizations')
    forward = type(conv).forward
    weight = _f64(conv.weight)
    if isinstance(conv, WSConv2d) and forward is WSConv2d.forward and \
            type(conv).standardized_weight is WSConv2d.standardized_weight:
        return standardize_weight(weight, conv.eps, conv.formula), True
    if forward is _mmcv_ws_forward():
        # mmcv's ConvWS: (W - mean) / (std_unbiased + eps).
        return standardize_weight(weight, conv.eps, 'std'), True
    if forward in _plain_forwards():
        return weight, False
    raise Unfoldable(f'{kind} has its own forward, which folding cannot '
                     'reproduce')


def plain_conv(conv: nn.modules.conv._ConvNd, weight: Tensor,
               bias: Optional[Tensor]) -> nn.Module:
    """A plain ``nn.Conv{1,2,3}d`` with ``conv``'s geometry and the given
    weight and bias (``None``: no bias), in ``conv``'s dtype and device."""
    like = conv.weight
    new = _PLAIN_CONVS[like.dim() - 2](
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=like.device,
        dtype=like.dtype)
    with torch.no_grad():
        new.weight.copy_(weight.to(like.dtype))
        if bias is not None:
            new.bias.copy_(bias.to(like.dtype))
    new.weight.requires_grad_(like.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(like.requires_grad if conv.bias is None else
                                conv.bias.requires_grad)
    return new.train(conv.training)


def fold_conv_bcn(conv: nn.Module,
                  bcn: BatchChannelNorm) -> Tuple[nn.Module, nn.GroupNorm]:
    """``(conv', group_norm)`` with ``group_norm(conv'(x))`` equal to
    ``bcn(conv(x))`` for an eval-mode ``bcn``:
    ``W' = a * W_hat``, ``bias' = a * bias + b`` (see the module docstring).

    Raises:
        Unfoldable: ``conv`` is not foldable or its channels do not match.
    """
    weight, _ = applied_weight(conv)
    if conv.out_channels != bcn.num_features:
        raise Unfoldable(f'{type(conv).__name__} has {conv.out_channels} '
                         f'output channels, the BCN {bcn.num_features}')
    if bcn._forward_hooks or bcn._forward_pre_hooks:
        raise Unfoldable('the BCN has forward hooks')
    a, b = batch_step_affine(bcn)
    shape = (-1, ) + (1, ) * (weight.dim() - 1)
    bias = b if conv.bias is None else a * _f64(conv.bias) + b
    return (plain_conv(conv, weight * a.view(shape), bias),
            group_step_module(bcn))


# ------------------------------------------------------- where to fold

def _conv_module_pairs(m) -> List[Pair]:
    if not m.with_norm or not isinstance(m.norm, BatchChannelNorm):
        return []
    order = list(m.order)
    if order.index('norm') == order.index('conv') + 1:
        return [('conv', m.norm_name, None)]
    return [(None, m.norm_name,
             f'ConvModule order {m.order} does not put the norm right '
             'after the conv')]


def _block_pairs(count: int) -> Callable[[nn.Module], List[Pair]]:

    def pairs(m) -> List[Pair]:
        return [(f'conv{i}', getattr(m, f'norm{i}_name'), None)
                for i in range(1, count + 1)]

    return pairs


def _stem_pairs(m) -> List[Pair]:
    return [] if m.deep_stem else [('conv1', m.norm1_name, None)]


def _sequential_pairs(m: nn.Sequential) -> List[Pair]:
    names = list(m._modules)
    return [(prev, name, None) for prev, name in zip(names, names[1:])
            if isinstance(m._modules[name], BatchChannelNorm)
            and isinstance(m._modules[prev], nn.modules.conv._ConvNd)]


def _pair_rules() -> Dict[Callable, Callable[[nn.Module], List[Pair]]]:
    """``forward`` function -> the (conv, norm) pairs it computes."""
    rules = {nn.Sequential.forward: _sequential_pairs}
    try:
        from mmcv.cnn import ConvModule
        rules[ConvModule.forward] = _conv_module_pairs
    except ImportError:  # pragma: no cover
        pass
    for lib in ('mmdet', 'mmseg'):
        try:
            resnet = __import__(f'{lib}.models.backbones.resnet',
                                fromlist=['ResNet'])
        except ImportError:
            continue
        rules[resnet.BasicBlock.forward] = _block_pairs(2)
        rules[resnet.Bottleneck.forward] = _block_pairs(3)
        rules[resnet.ResNet.forward] = _stem_pairs
    return rules


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def fold_bcn(model: nn.Module) -> FoldReport:
    """Fold, in place, every BCN of an eval-mode ``model`` that follows a
    convolution into that convolution (Eq. 13) and turn its group step into
    ``nn.GroupNorm`` (Eq. 15); WS convolutions become plain ``nn.Conv2d``.

    The folded model computes what ``model`` computed in eval mode. Folded
    modules are replaced under their own attribute names (``conv1``,
    ``norm1_name``'s ``bcn1``, ``downsample.1``, ...), so properties such as
    mmdet's ``block.norm1`` keep working. Places that cannot be folded are
    listed in the report, not skipped silently.

    Raises:
        RuntimeError: a BCN is in training mode (its batch step would use
            batch statistics, which no convolution can hold).
    """
    training = [name for name, m in model.named_modules()
                if isinstance(m, BatchChannelNorm) and m.training]
    if training:
        raise RuntimeError(
            'fold_bcn needs an eval-mode model (call model.eval() first): '
            f'{len(training)} BCN layers are in training mode, e.g. '
            f'{training[0]!r}')
    uses = Counter(id(m) for _, m in model.named_modules(
        remove_duplicate=False))
    rules = _pair_rules()
    report = FoldReport()
    reasons: Dict[int, str] = {}
    plans = []
    for prefix, parent in model.named_modules():
        rule = rules.get(type(parent).forward)
        for conv_name, norm_name, why in rule(parent) if rule else []:
            norm = getattr(parent, norm_name)
            if not isinstance(norm, BatchChannelNorm):
                continue
            if conv_name is None:
                reasons[id(norm)] = why
                continue
            conv = getattr(parent, conv_name)
            try:
                if uses[id(conv)] > 1 or uses[id(norm)] > 1:
                    raise Unfoldable('the conv or the BCN is shared by '
                                     'several parents')
                folded = fold_conv_bcn(conv, norm)
            except Unfoldable as err:
                reasons[id(norm)] = (f'after {_join(prefix, conv_name)}: '
                                     f'{err}')
                continue
            plans.append((parent, conv_name, norm_name, folded))
            report.folded.append((_join(prefix, conv_name),
                                  _join(prefix, norm_name)))
    for parent, conv_name, norm_name, (conv, norm) in plans:
        setattr(parent, conv_name, conv)
        setattr(parent, norm_name, norm)
    for name, m in model.named_modules():
        if isinstance(m, BatchChannelNorm):
            report.unfoldable.append((name, reasons.get(
                id(m), 'no convolution known to feed only this BCN '
                '(known: ConvModule conv->norm, mmdet/mmseg ResNet blocks '
                'and stem, nn.Sequential(conv, BCN))')))
    _replace_ws_convs(model, uses, report)
    return report


def _replace_ws_convs(model: nn.Module, uses: Counter,
                      report: FoldReport) -> None:
    """WS convolutions not folded with a BCN become plain convolutions with
    the standardized weight (and their own bias)."""
    ws_classes = (WSConv2d, ) + _mmcv_ws_classes()
    plans = []
    for prefix, parent in model.named_modules():
        for name, conv in parent.named_children():
            if not isinstance(conv, nn.modules.conv._ConvNd):
                continue
            path = _join(prefix, name)
            try:
                weight, ws = applied_weight(conv)
            except Unfoldable as err:
                if isinstance(conv, ws_classes):
                    report.unfoldable.append((path, str(err)))
                continue
            if not ws:
                continue
            if uses[id(conv)] > 1:
                report.unfoldable.append(
                    (path, 'the WS convolution is shared by several '
                     'parents'))
                continue
            bias = None if conv.bias is None else _f64(conv.bias)
            plans.append((parent, name, plain_conv(conv, weight, bias)))
            report.standardized.append(path)
    for parent, name, conv in plans:
        setattr(parent, name, conv)
