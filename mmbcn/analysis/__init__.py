# Copyright (c) mmbcn contributors. All rights reserved.
"""Measure how close models are to elimination singularities (paper Sec. 2):
StatDiff (Eq. 8), dead and under-represented channels, and the models and
data of the Fig. 1 and Fig. 3 experiments (``tools/analysis/``)."""
from .channel_stats import (ActivationSummary, dead_channel_fraction,
                            small_scale_fraction)
from .cifar_resnet import CifarResNet
from .conv4_net import FourLayerConvNet
from .datasets import load_cifar10, load_data, load_digits
from .fixed_stat_norm import FixedStatNorm, draw_target_statistics
from .norm_probe import NormProbe, SingularityProbe, find_norm_layers
from .report import markdown_table, write_csv, write_report
from .stat_diff import stat_diff
from .training import evaluate, train

__all__ = [
    'stat_diff', 'ActivationSummary', 'dead_channel_fraction',
    'small_scale_fraction', 'NormProbe', 'SingularityProbe',
    'find_norm_layers', 'FixedStatNorm', 'draw_target_statistics',
    'FourLayerConvNet', 'CifarResNet', 'load_digits', 'load_cifar10',
    'load_data', 'evaluate', 'train', 'markdown_table', 'write_csv',
    'write_report'
]
