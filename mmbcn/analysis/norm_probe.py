# Copyright (c) mmbcn contributors. All rights reserved.
"""Watch a model's normalization layers for elimination singularities.

:class:`SingularityProbe` attaches to every BCN, GroupNorm, LayerNorm and
BatchNorm layer of a model and measures, per layer:

* StatDiff (Eq. 8) of each group of channels the layer normalizes together,
  from the running mean and standard deviation of those channels;
* which channels are dead or under-represented after ReLU
  (:mod:`.channel_stats`), from the layer's outputs while capturing.

The channels that a layer normalizes together, and their statistics:

========================  ===========  =====================================
layer                     groups       per-channel mean / std
========================  ===========  =====================================
GroupNorm (GN)            num_groups   running statistics of the input,
                                       tracked by a forward pre-hook
LayerNorm (LN)            1            as GN; ``nn.GroupNorm(1, C)`` is the
                                       LN of conv nets and counts as GN
BatchNorm (BN)            C            the layer's ``running_mean`` /
                                       ``running_var`` (tracked like GN when
                                       it keeps none); StatDiff is 0 by
                                       construction (Eq. 5)
BCN                       num_groups   those of the group step's input, the
                                       batch step's output (Eq. 13-14):
                                       mean ``batch_bias``, std
                                       ``|batch_weight| sqrt(v / (v + eps))``
                                       with ``v = running_var``
========================  ===========  =====================================

Tracked running statistics follow BatchNorm's rule: updated in training mode
only, ``stat <- (1 - momentum) * stat + momentum * batch_stat`` with the
unbiased batch variance, except that the first batch sets them.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import BatchChannelNorm
from .channel_stats import ActivationSummary, channel_rows
from .stat_diff import stat_diff

NORM_TYPES = (BatchChannelNorm, nn.GroupNorm, nn.LayerNorm, _BatchNorm)


def find_norm_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, layer) of every BCN, GN, LN and BN layer of ``model``."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, NORM_TYPES)]


class NormProbe:
    """Statistics of one normalization layer (see the module docstring).

    Args:
        name (str): The layer's name in its model.
        layer (nn.Module): A BCN, GN, LN or BN layer.
        momentum (float): Running-average factor of tracked statistics.
    """

    def __init__(self, name: str, layer: nn.Module, momentum: float = 0.1):
        if not isinstance(layer, NORM_TYPES):
            raise TypeError(f'{name}: {type(layer).__name__} is not a BCN, '
                            'GroupNorm, LayerNorm or BatchNorm layer')
        if not 0 < momentum <= 1:
            raise ValueError(f'momentum={momentum} must lie in (0, 1]')
        self.name = name
        self.layer = layer
        self.momentum = momentum
        self.running_mean: Optional[Tensor] = None
        self.running_var: Optional[Tensor] = None
        self.summary: Optional[ActivationSummary] = None
        self.capturing = False
        self._handles = [layer.register_forward_hook(self._on_output)]
        if self._tracks_input:
            self._handles.append(
                layer.register_forward_pre_hook(self._on_input))

    @property
    def kind(self) -> str:
        if isinstance(self.layer, BatchChannelNorm):
            return 'BCN'
        if isinstance(self.layer, nn.GroupNorm):
            return 'GN'
        if isinstance(self.layer, nn.LayerNorm):
            return 'LN'
        return 'BN'

    @property
    def num_groups(self) -> int:
        """Groups of contiguous channels normalized together."""
        if self.kind in ('BCN', 'GN'):
            return self.layer.num_groups
        if self.kind == 'LN':
            return 1
        return self.layer.num_features

    @property
    def _tracks_input(self) -> bool:
        if self.kind == 'BN':
            return not self.layer.track_running_stats
        return self.kind in ('GN', 'LN')

    def channel_dim(self, x: Tensor) -> int:
        """The channel dimension of the layer's input / output ``x``."""
        if self.kind == 'LN':
            return x.dim() - len(self.layer.normalized_shape)
        return 1

    @torch.no_grad()
    def _on_input(self, layer: nn.Module, args) -> None:
        if not layer.training:
            return
        rows = channel_rows(args[0], self.channel_dim(args[0])).float()
        if rows.shape[1] < 2:
            return
        var, mean = torch.var_mean(rows, dim=1, correction=1)
        if self.running_mean is None:
            self.running_mean, self.running_var = mean, var
        else:
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)

    @torch.no_grad()
    def _on_output(self, layer: nn.Module, args, output: Tensor) -> None:
        if not self.capturing:
            return
        summary = ActivationSummary.of(output, self.channel_dim(output))
        self.summary = (summary if self.summary is None else
                        self.summary.merge(summary))

    def channel_statistics(self) -> Optional[Tuple[Tensor, Tensor]]:
        """Per-channel (mean, std) of the channels the layer normalizes
        together; None before a tracked layer has seen a training batch."""
        layer = self.layer
        if self.kind == 'BCN':
            var = layer.running_var.detach().float()
            shrink = (var / (var + layer.eps)).sqrt()
            return (layer.batch_bias.detach().float(),
                    layer.batch_weight.detach().float().abs() * shrink)
        if self._tracks_input:
            if self.running_mean is None:
                return None
            return self.running_mean, self.running_var.clamp(min=0).sqrt()
        return (layer.running_mean.detach().float(),
                layer.running_var.detach().float().clamp(min=0).sqrt())

    def stat_diff(self) -> Optional[Tensor]:
        """StatDiff (Eq. 8) per group, shape (G,); None if no statistics
        yet."""
        stats = self.channel_statistics()
        if stats is None:
            return None
        return stat_diff(stats[0].cpu(), stats[1].cpu(), self.num_groups)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class SingularityProbe:
    """Probes on every normalization layer of ``model``.

    Usage::

        probe = SingularityProbe(model)
        for x, y in loader:            # training updates tracked statistics
            ...
        with probe.capture():          # dead / small-scale channels of the
            model(batch)               # batches run inside the block
        print(probe.summary())
        probe.remove()

    Args:
        model (nn.Module): Model to watch; it must hold at least one BCN,
            GN, LN or BN layer.
        momentum (float): Running-average factor of tracked statistics.
            Default 0.1.
        scale_ratio (float): A channel is under-represented when its
            activation scale is below ``scale_ratio`` times its group's
            largest. Default 0.01.
    """

    def __init__(self,
                 model: nn.Module,
                 momentum: float = 0.1,
                 scale_ratio: float = 0.01):
        layers = find_norm_layers(model)
        if not layers:
            raise ValueError('the model has no BCN, GroupNorm, LayerNorm or '
                             'BatchNorm layer to probe')
        if not 0 < scale_ratio < 1:
            raise ValueError(f'scale_ratio={scale_ratio} must lie in (0, 1)')
        self.scale_ratio = scale_ratio
        self.probes = [NormProbe(name, m, momentum) for name, m in layers]

    def start_capture(self) -> None:
        """Summarize the outputs of every following forward pass."""
        for probe in self.probes:
            probe.summary = None
            probe.capturing = True

    def stop_capture(self) -> None:
        for probe in self.probes:
            probe.capturing = False

    @contextlib.contextmanager
    def capture(self) -> Iterator['SingularityProbe']:
        """Capture the forward passes run inside the block."""
        self.start_capture()
        try:
            yield self
        finally:
            self.stop_capture()

    def stat_diffs(self) -> Dict[str, Tensor]:
        """StatDiff per group (G,) of each layer that has statistics."""
        values = {p.name: p.stat_diff() for p in self.probes}
        return {name: v for name, v in values.items() if v is not None}

    def channel_masks(self) -> Dict[str, Tuple[Tensor, Tensor]]:
        """(dead, small_scale) boolean masks (C,) of each layer captured
        since the last :meth:`start_capture`."""
        return {
            p.name: (p.summary.dead(),
                     p.summary.small_scale(p.num_groups, self.scale_ratio))
            for p in self.probes if p.summary is not None
        }

    def summary(self) -> Dict[str, float]:
        """Scalars over all layers together:

        * ``stat_diff_mean``, ``stat_diff_std``: mean and (population)
          standard deviation of StatDiff over all groups of all layers
          (Fig. 3);
        * ``dead_fraction``, ``small_scale_fraction``: fractions of all
          channels of all captured layers that are dead / under-represented.

        Entries without data (nothing trained or captured yet) are left out.
        """
        result = {}
        diffs = list(self.stat_diffs().values())
        if diffs:
            groups = torch.cat(diffs)
            result['stat_diff_mean'] = groups.mean().item()
            result['stat_diff_std'] = groups.std(correction=0).item()
        masks = list(self.channel_masks().values())
        if masks:
            dead = torch.cat([m[0] for m in masks]).float()
            small = torch.cat([m[1] for m in masks]).float()
            result['dead_fraction'] = dead.mean().item()
            result['small_scale_fraction'] = small.mean().item()
        return result

    def remove(self) -> None:
        """Detach every hook from the model."""
        for probe in self.probes:
            probe.remove()
