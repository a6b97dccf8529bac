# Copyright (c) mmbcn contributors. All rights reserved.
"""Deployment: fold BCN's batch step and WS into the convolutions of an
eval-mode model (:func:`fold_bcn`), and express the folded model as an
OpenMMLab config (GN, plain convolutions) plus a state dict
(:func:`folded_config`, :func:`transfer_state`;
``tools/deploy/fold_bcn.py``). Importing it registers the ``FoldedConv``
conv type."""
from .fold import (FoldReport, Unfoldable, batch_step_affine, fold_bcn,
                   fold_conv_bcn, group_step_module)
from .folded_config import FOLDED_CONV, folded_config, folded_conv
from .state_transfer import StateTransferError, transfer_state

__all__ = [
    'FoldReport', 'Unfoldable', 'batch_step_affine', 'fold_bcn',
    'fold_conv_bcn', 'group_step_module', 'FOLDED_CONV', 'folded_config',
    'folded_conv', 'StateTransferError', 'transfer_state'
]
