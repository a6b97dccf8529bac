# Copyright (c) mmbcn contributors. All rights reserved.
"""The pretraining part of ``tools/demo.py --pretrained``: backbones
pretrained on the bundled classification set, cached by a key of their
config and data. It lives in ``mmbcn.demo.pretrain``; this module names
its parts for the scripts and tests that load them from here."""
from mmbcn.demo.pretrain import (BACKBONES, CHECKPOINT, DETECTORS, KEY,
                                 cache_key, cached, data_fingerprint,
                                 entry_dir, pretrain_config,
                                 pretrained_detectors, train_backbones)

__all__ = [
    'BACKBONES', 'CHECKPOINT', 'DETECTORS', 'KEY', 'cache_key', 'cached',
    'data_fingerprint', 'entry_dir', 'pretrain_config',
    'pretrained_detectors', 'train_backbones'
]
