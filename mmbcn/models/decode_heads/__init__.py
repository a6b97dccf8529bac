# Copyright (c) mmbcn contributors. All rights reserved.
from .bcn_aspp_head import BCNASPPHead

__all__ = ['BCNASPPHead']
