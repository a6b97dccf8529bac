# Copyright (c) mmbcn contributors. All rights reserved.
"""One call of :func:`~mmbcn.ops.batch_channel_norm`: its tensors and the
mode of the batch step, as every backend receives it."""
from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor

#: Modes of the batch step (Eq. 13).
FIXED = 'fixed'  # running_mean / running_var as they are (evaluation)
BATCH = 'batch'  # the batch's statistics; running averages move (Eq. 14)
ESTIMATE = 'estimate'  # Algorithm 1's estimates move, then normalize
#: The one table of modes and the integer code each has in the kernels:
#: csrc/bcn_cpu.cpp's ``Mode`` enum (``kFixed``, ... : checked against
#: this table by tests/test_backends.py) and triton_kernels.py's
#: ``MODE`` argument. A backend declares the modes it serves
#: (:class:`~.backends.Backend`); it is never handed another.
MODE_CODES = {FIXED: 0, BATCH: 1, ESTIMATE: 2}
MODES = tuple(MODE_CODES)


@dataclass
class BCNCall:
    """Arguments of one BCN evaluation.

    ``rate``: a one-element float64 tensor, the op's argument as given;
    read it as :attr:`momentum` or :attr:`update_rate`, which name what it
    is in the call's mode. ``synchronized``: the batch statistics are
    combined across the processes of ``process_group``.
    """
    x: Tensor
    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor
    batch_weight: Tensor
    batch_bias: Tensor
    weight: Tensor
    bias: Tensor
    num_groups: int
    mode: str
    rate: Optional[Tensor]
    eps: float
    synchronized: bool = False
    process_group: Any = None

    @property
    def momentum(self) -> Optional[Tensor]:
        """``'batch'`` mode: the running averages' momentum (``None``:
        cumulative average); ``None`` in the other modes."""
        return self.rate if self.mode == BATCH else None

    @property
    def update_rate(self) -> Optional[Tensor]:
        """``'estimate'`` mode: Algorithm 1's rate r; ``None`` in the
        other modes."""
        return self.rate if self.mode == ESTIMATE else None
