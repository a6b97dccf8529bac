# Copyright (c) mmbcn contributors. All rights reserved.
"""Models and checkpoints: the authors' DeepLabV3 head and the conversion of
the authors' released checkpoints. Needs mmseg.

``import mmbcn`` does not import this package: a config whose model uses
``BCNASPPHead`` (registered in mmseg's ``MODELS`` on import) names it in
``custom_imports = dict(imports=['mmbcn', 'mmbcn.models'],
allow_failed_imports=False)``."""
from .decode_heads import BCNASPPHead
from .official_checkpoint import (ARCHITECTURES, OfficialCheckpointError,
                                  convert_official_checkpoint)

__all__ = [
    'BCNASPPHead', 'ARCHITECTURES', 'OfficialCheckpointError',
    'convert_official_checkpoint'
]
