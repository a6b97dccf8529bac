# Copyright (c) mmbcn contributors. All rights reserved.
from .update_rate_hook import BCNUpdateRateHook, estimate_layers

__all__ = ['BCNUpdateRateHook', 'estimate_layers']
