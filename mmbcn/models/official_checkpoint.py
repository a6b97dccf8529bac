# Copyright (c) mmbcn contributors. All rights reserved.
"""The authors' released BCN+WS checkpoints, converted to mmdet's / mmseg's
layout.

Source format: torchvision-style ResNet / ResNeXt saved from a
(Distributed)DataParallel model, so keys may carry a ``module.`` prefix;
the file holds a bare state dict or ``{'state_dict': ..., 'epoch',
'best_acc', 'optimizer', ...}``. Every conv is WS without bias; every norm
is BCN with 32 groups, stored as a BatchNorm ``pbn`` (the batch step,
Eq. 13) and the group step's per-group affine of shape (1, G, 1) (Eq. 15).
Keys, official -> mmdet / mmseg (:class:`mmbcn.ops.BatchChannelNorm`
parameters)::

    conv1.weight                         conv1.weight
    bn1.pbn.weight, .pbn.bias            bcn1.batch_weight, .batch_bias
    bn1.pbn.running_mean, .running_var,  bcn1.running_mean, .running_var,
        .num_batches_tracked                 .num_batches_tracked
    bn1.weight, .bias  (1, G, 1)         bcn1.weight, .bias  (G,)
    layerS.B.convK.weight                layerS.B.convK.weight
    layerS.B.bnK.*                       layerS.B.bcnK.*          (as bn1)
    layerS.B.downsample.0.weight         layerS.B.downsample.0.weight
    layerS.B.downsample.1.*              layerS.B.downsample.1.*  (as bn1)
    fc.weight, fc.bias                   dropped (ImageNet classifier)

The DeepLabV3 model becomes a whole mmseg ``EncoderDecoder``: the backbone
keys above under ``backbone.``, and the head ``aspp.*`` in
:class:`~mmbcn.models.decode_heads.BCNASPPHead`::

    aspp.aspp1 .. aspp4, aspp1_bn ..     decode_head.aspp_modules.0 .. 3
                                             .conv, .bcn
    aspp.aspp5, aspp5_bn                 decode_head.image_pool.1.conv, .bcn
    aspp.conv2, bn2                      decode_head.bottleneck.conv, .bcn
    aspp.conv3.weight, .bias             decode_head.conv_seg.weight, .bias

A ``num_batches_tracked`` missing from the source (older PyTorch did not
save it; the authors' evaluation drops it) is written as 0.
"""
import copy
import hashlib
import os
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import mmseg.models  # noqa: F401  (registers ResNet, EncoderDecoder, ...)
import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..engine.checkpoint.load import not_a_torch_file
from ..engine.checkpoint.model_weights import strip_module_prefix
from ..utils import atomic_save, check_outputs, scoped_build
from ..version import __version__
from . import decode_heads  # noqa: F401  (registers BCNASPPHead)

NUM_GROUPS = 32
BCN = dict(type='BCN', num_groups=NUM_GROUPS)


class OfficialCheckpointError(ValueError):
    """The file is not an official BCN+WS checkpoint this module converts."""


@dataclass(frozen=True)
class Architecture:
    """One released model: how to recognise it and what it converts to.

    ``blocks`` (bottlenecks per stage), ``groups`` (of the 3x3 convs) and
    ``head`` (``'fc'``: ImageNet classifier, dropped; ``'aspp'``: DeepLabV3)
    identify it; ``model`` is the mmseg config of the module whose state
    dict the conversion produces (mmdet's ``ResNet`` / ``ResNeXt`` share its
    keys).
    """
    name: str
    blocks: Tuple[int, ...]
    groups: int
    head: str
    model: dict


def _backbone(**kwargs) -> dict:
    """An mmseg (mmdet) ResNet config with the official models' layers."""
    return dict(
        dict(
            type='ResNet',
            depth=50,
            style='pytorch',
            conv_cfg=dict(type='WSConv', formula='var'),
            norm_cfg=BCN), **kwargs)


DEEPLABV3_R101 = dict(
    type='EncoderDecoder',
    backbone=_backbone(
        depth=101,
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        contract_dilation=True,
        conv_cfg=dict(type='WSConv', formula='std')),
    decode_head=dict(
        type='BCNASPPHead',
        in_channels=2048,
        in_index=3,
        channels=256,
        dilations=(1, 6, 12, 18),
        num_classes=21,
        conv_cfg=dict(type='WSConv', formula='std'),
        norm_cfg=BCN))

ARCHITECTURES = (
    Architecture('ResNet-50', (3, 4, 6, 3), 1, 'fc', _backbone()),
    Architecture('ResNet-101', (3, 4, 23, 3), 1, 'fc', _backbone(depth=101)),
    Architecture('ResNeXt-50 32x4d', (3, 4, 6, 3), 32, 'fc',
                 _backbone(type='ResNeXt', groups=32, base_width=4)),
    Architecture('DeepLabV3-R101 (PASCAL VOC)', (3, 4, 23, 3), 1, 'aspp',
                 DEEPLABV3_R101),
)

# Parameters of a module kind, official name -> mmdet / mmseg name.
CONV = {'weight': 'weight'}
CONV_BIAS = {'weight': 'weight', 'bias': 'bias'}
NORM = {
    'pbn.weight': 'batch_weight',
    'pbn.bias': 'batch_bias',
    'pbn.running_mean': 'running_mean',
    'pbn.running_var': 'running_var',
    'pbn.num_batches_tracked': 'num_batches_tracked',
    'weight': 'weight',
    'bias': 'bias',
}
PARAM_NAMES = sorted(set(NORM) | set(CONV_BIAS), key=len, reverse=True)

# Module paths, official regex -> mmdet / mmseg path, parameters.
BACKBONE_MODULES = (
    (r'conv1', 'conv1', CONV),
    (r'bn1', 'bcn1', NORM),
    (r'(layer\d+\.\d+)\.conv([123])', r'\1.conv\2', CONV),
    (r'(layer\d+\.\d+)\.bn([123])', r'\1.bcn\2', NORM),
    (r'(layer\d+\.\d+\.downsample)\.0', r'\1.0', CONV),
    (r'(layer\d+\.\d+\.downsample)\.1', r'\1.1', NORM),
)
ASPP_MODULES = (
    (r'aspp\.aspp1', 'decode_head.aspp_modules.0.conv', CONV),
    (r'aspp\.aspp1_bn', 'decode_head.aspp_modules.0.bcn', NORM),
    (r'aspp\.aspp2', 'decode_head.aspp_modules.1.conv', CONV),
    (r'aspp\.aspp2_bn', 'decode_head.aspp_modules.1.bcn', NORM),
    (r'aspp\.aspp3', 'decode_head.aspp_modules.2.conv', CONV),
    (r'aspp\.aspp3_bn', 'decode_head.aspp_modules.2.bcn', NORM),
    (r'aspp\.aspp4', 'decode_head.aspp_modules.3.conv', CONV),
    (r'aspp\.aspp4_bn', 'decode_head.aspp_modules.3.bcn', NORM),
    (r'aspp\.aspp5', 'decode_head.image_pool.1.conv', CONV),
    (r'aspp\.aspp5_bn', 'decode_head.image_pool.1.bcn', NORM),
    (r'aspp\.conv2', 'decode_head.bottleneck.conv', CONV),
    (r'aspp\.bn2', 'decode_head.bottleneck.bcn', NORM),
    (r'aspp\.conv3', 'decode_head.conv_seg', CONV_BIAS),
)


def module_rules(arch: Architecture) -> tuple:
    """(official regex, target path or None to drop, parameters)."""
    if arch.head == 'aspp':
        return tuple(
            (pattern, 'backbone.' + target, params)
            for pattern, target, params in BACKBONE_MODULES) + ASPP_MODULES
    return BACKBONE_MODULES + ((r'fc', None, CONV_BIAS), )


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def load_official_state(path: str) -> Dict[str, Tensor]:
    """The state dict of an official checkpoint file, ``module.`` prefixes
    removed. Read with ``weights_only=True``: nothing but tensors and plain
    containers is unpickled."""
    if not os.path.isfile(path):
        raise OfficialCheckpointError(f'{path}: no such file')
    not_torch = not_a_torch_file(path)
    if not_torch:  # not torch.save's bytes: unreadable, not unsafe
        raise OfficialCheckpointError(
            f'{path}: not a readable PyTorch checkpoint: {not_torch}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise OfficialCheckpointError(
            f'{path}: refused: it holds pickled objects beyond tensors and '
            'plain containers (possibly code), which the authors\' '
            'checkpoints do not; nothing of it was run. Use the file as '
            'released by the authors (docs/model_zoo.md)') from e
    except Exception as e:  # any failure to unpickle means unreadable
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise OfficialCheckpointError(
            f'{path}: not a readable PyTorch checkpoint (truncated, or '
            f'another format): {type(e).__name__}: {reason}') from e
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor)
            for k, v in obj.items()):
        found = (f'a dict with keys {_preview(obj)}'
                 if isinstance(obj, dict) else f'a {type(obj).__name__}')
        raise OfficialCheckpointError(
            f'{path}: holds {found}, not a state dict (name -> tensor) nor '
            "{'state_dict': state dict, ...}")
    return OrderedDict(strip_module_prefix(obj))


def recognise_architecture(state: Dict[str, Tensor]) -> Architecture:
    """Which released model ``state`` holds (see :data:`ARCHITECTURES`), from
    its norm layers, blocks per stage, 3x3 conv groups and head."""
    _check_bcn(state)
    blocks = [0, 0, 0, 0]
    for key in state:
        match = re.match(r'layer([1-4])\.(\d+)\.', key)
        if match:
            stage = int(match[1]) - 1
            blocks[stage] = max(blocks[stage], int(match[2]) + 1)
    conv2 = state.get('layer1.0.conv2.weight')
    groups = (
        conv2.shape[0] // conv2.shape[1]
        if conv2 is not None and conv2.dim() == 4 and conv2.shape[1] else 0)
    if any(k.startswith('aspp.') for k in state):
        head = 'aspp'
    else:
        head = 'fc' if 'fc.weight' in state else 'none'
    for arch in ARCHITECTURES:
        if (arch.blocks, arch.groups, arch.head) == (tuple(blocks), groups,
                                                     head):
            return arch
    known = '; '.join(f'{a.name}: blocks {a.blocks}, groups {a.groups}, '
                      f'head {a.head!r}' for a in ARCHITECTURES)
    raise OfficialCheckpointError(
        f'architecture not recognised: found BCN layers with blocks per '
        f'stage {tuple(blocks)}, 3x3 conv groups {groups}, head {head!r}. '
        f'Known: {known}')


def _check_bcn(state: Dict[str, Tensor]) -> None:
    """Raise unless the stem norm ``bn1`` is BCN with 32 groups."""
    weight = state.get('bn1.weight')
    shape = tuple(weight.shape) if weight is not None else None
    if 'bn1.pbn.running_var' in state and weight is not None:
        if shape == (1, NUM_GROUPS, 1):
            return
        raise OfficialCheckpointError(
            f'BCN group affine bn1.weight has shape {shape}; the official '
            f'models use (1, {NUM_GROUPS}, 1)')
    if 'bn1.running_var' in state:
        found = (f'BatchNorm layers (bn1.running_var, bn1.weight of shape '
                 f'{shape}), e.g. a torchvision ResNet')
    elif weight is not None:
        found = (f'norm layers without batch statistics (bn1.weight of '
                 f'shape {shape}, no bn1.pbn.*), e.g. GroupNorm (GN)')
    elif any(k.endswith('bcn1.batch_weight') for k in state):
        found = 'BCN layers already in mmdet / mmseg layout (bcn1.*)'
    else:
        found = f'no torchvision-style stem norm bn1.*; keys {_preview(state)}'
    raise OfficialCheckpointError(
        f'not an official BCN+WS checkpoint: found {found}. Official BCN '
        f'layers hold <norm>.pbn.* (batch step) and <norm>.weight / .bias '
        f'of shape (1, {NUM_GROUPS}, 1) (group step)')


def convert_state_dict(state: Dict[str, Tensor],
                       arch: Architecture) -> Tuple[Dict[str, Tensor], dict]:
    """Rename and reshape ``state`` (official keys) for ``arch``'s mmdet /
    mmseg module, checked key by key and shape by shape against that
    module. Returns the state dict, in the module's order, and counts."""
    expected = target_state_shapes(arch)
    rules = module_rules(arch)
    converted, sources, unmapped, dropped = {}, {}, [], []
    for key, tensor in state.items():
        target, group_affine = _map_key(key, rules)
        if target is None:
            dropped.append(key)
        elif target is False or target not in expected:
            unmapped.append(key)
        else:
            if group_affine and tensor.dim() == 3 and (tensor.shape[0] ==
                                                       tensor.shape[2] == 1):
                tensor = tensor.reshape(-1)  # (1, G, 1) -> (G,)
            converted[target] = tensor
            sources[target] = key
    if unmapped:
        raise OfficialCheckpointError(
            f'{arch.name}: {len(unmapped)} source key(s) could not be '
            f'mapped: {_preview(unmapped)}')
    filled = [
        k for k in expected
        if k not in converted and k.endswith('num_batches_tracked')
    ]
    for key in filled:
        converted[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in converted]
    if missing:
        raise OfficialCheckpointError(
            f'{arch.name}: the checkpoint lacks {len(missing)} key(s) the '
            f'model needs: {_preview(missing)}')
    wrong = [
        f'{sources[k]} -> {k}: checkpoint {tuple(converted[k].shape)}, '
        f'model {tuple(expected[k])}' for k in expected
        if k in sources and tuple(converted[k].shape) != tuple(expected[k])
    ]
    if wrong:
        raise OfficialCheckpointError(
            f'{arch.name}: {len(wrong)} shape mismatch(es): '
            f'{_preview(wrong)}')
    report = dict(mapped=len(sources), dropped=dropped, filled=len(filled))
    return OrderedDict((k, converted[k]) for k in expected), report


def _map_key(key: str, rules: tuple):
    """(target key, whether it is the group step's affine); the target is
    None for a dropped key and False for a key no rule maps."""
    for param in PARAM_NAMES:
        if key.endswith('.' + param):
            module = key[:-len(param) - 1]
            for pattern, target, params in rules:
                match = re.fullmatch(pattern, module)
                if match and param in params:
                    if target is None:
                        return None, False
                    return (match.expand(target) + '.' + params[param],
                            params is NORM and param in ('weight', 'bias'))
    return False, False


def target_state_shapes(arch: Architecture) -> Dict[str, torch.Size]:
    """Key -> shape of ``arch.model``'s state dict (built on the meta
    device: no memory, no initialization cost)."""
    with torch.device('meta'), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmseg's loss-builder notices
        model = scoped_build(copy.deepcopy(arch.model), MODELS.scope, MODELS)
    return OrderedDict((k, v.shape) for k, v in model.state_dict().items())


def convert_official_checkpoint(src: str,
                                dst: str,
                                log: Callable[[str], None] = print) -> dict:
    """Convert the official checkpoint ``src`` into the mmengine checkpoint
    ``dst`` (``{'state_dict', 'meta'}``), reporting each stage to ``log``.

    ``dst`` appears only when everything succeeded (written to a temporary
    file beside it, then renamed; mode from the user's umask). Returns the
    meta.

    Raises:
        OutputPathError: ``dst`` is ``src`` (it would replace the official
            file).
        OfficialCheckpointError: ``src`` is unreadable, of another
            architecture or norm, has keys that cannot be mapped, lacks keys
            or has wrong shapes (the message names them).
    """
    check_outputs({'the output': dst}, {'official checkpoint': src})
    log(f'[1/5] reading {src}')
    digest = file_sha256(src) if os.path.isfile(src) else None
    state = load_official_state(src)
    log(f'      {len(state)} tensors, sha256 {digest}')
    arch = recognise_architecture(state)
    log(f'[2/5] recognised {arch.name} (BCN with {NUM_GROUPS} groups, '
        f'blocks {arch.blocks}, head {arch.head!r})')
    converted, report = convert_state_dict(state, arch)
    notes = [f'{len(report["dropped"])} classifier keys dropped'
             ] if report['dropped'] else []
    if report['filled']:
        notes.append(f'{report["filled"]} num_batches_tracked set to 0')
    log(f'[3/5] mapped {report["mapped"]} keys' +
        (f' ({", ".join(notes)})' if notes else ''))
    log(f'[4/5] all {len(converted)} keys and shapes match mmseg '
        f'{arch.model["type"]}')
    meta = dict(
        architecture=arch.name,
        source=os.path.basename(src),
        source_sha256=digest,
        converter=f'mmbcn.models.official_checkpoint (mmbcn {__version__})')
    if arch.head == 'aspp':
        meta['dataset_meta'] = _voc_meta()
    save_checkpoint(dict(state_dict=converted, meta=meta), dst)
    log(f'[5/5] wrote {dst}')
    return meta


def save_checkpoint(checkpoint: dict, dst: str) -> None:
    """``torch.save`` to a temporary file in ``dst``'s folder, then rename:
    ``dst`` is never left partly written; its mode follows the umask."""
    atomic_save(checkpoint, dst)


def _voc_meta() -> dict:
    """PASCAL VOC class names and palette, as mmseg's ``init_model`` reads
    them from ``meta['dataset_meta']``."""
    from mmseg.datasets import PascalVOCDataset
    info = PascalVOCDataset.METAINFO
    return dict(
        classes=list(info['classes']),
        palette=[list(color) for color in info['palette']])


def _preview(items, limit: int = 12) -> str:
    items = list(items)
    shown = ', '.join(str(i) for i in items[:limit])
    more = f', ... ({len(items) - limit} more)' if len(items) > limit else ''
    return f'[{shown}{more}]'


__all__ = [
    'ARCHITECTURES', 'Architecture', 'OfficialCheckpointError',
    'convert_official_checkpoint', 'convert_state_dict', 'load_official_state',
    'recognise_architecture', 'target_state_shapes'
]
