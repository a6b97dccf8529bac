# Copyright (c) mmbcn contributors. All rights reserved.
"""Multi-process training on machines without CUDA (gloo).

mmengine 0.10 assumes CUDA when it starts a distributed run: its
``init_dist`` calls ``torch.cuda.set_device`` and its Runner passes
``device_ids=[LOCAL_RANK]`` to DistributedDataParallel, which DDP rejects
for CPU modules. :func:`prepare_cpu_distributed` initialises the gloo
process group itself (the Runner then skips its own initialisation) and
selects :class:`CPUDistributedDataParallel`. On CUDA machines nothing
changes.
"""
import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` for CPU modules (no device_ids)."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def prepare_cpu_distributed(cfg, launcher: str) -> None:
    """Set up ``cfg`` and torch.distributed for a CPU run under
    ``launcher`` (only ``'pytorch'``, i.e. torchrun, is supported there)."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA on this machine; on CPU start '
            'the processes with torchrun (tools/dist_train.sh) and '
            '--launcher pytorch')
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') not in (
            'MMDistributedDataParallel', 'CPUDistributedDataParallel'):
        raise RuntimeError(
            f"model_wrapper_cfg.type={wrapper['type']!r} cannot run on CPU; "
            'leave it unset to use CPUDistributedDataParallel')
    wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
