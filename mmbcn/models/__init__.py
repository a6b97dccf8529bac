# Copyright (c) mmbcn contributors. All rights reserved.
"""Models and checkpoints: the authors' DeepLabV3 head (registered in
mmseg's MODELS) and the conversion of the authors' released checkpoints."""
from .decode_heads import BCNASPPHead
from .official_checkpoint import (ARCHITECTURES, OfficialCheckpointError,
                                  convert_official_checkpoint)

__all__ = [
    'BCNASPPHead', 'ARCHITECTURES', 'OfficialCheckpointError',
    'convert_official_checkpoint'
]
