"""A small real mmengine model, dataset and metric (a BCN+WS ConvModule
and a linear classifier on random 8x8 images) that the reliability tests
train, resume, test and fold in about a second, and hooks that put
objects into checkpoints or kill the process while saving."""
import collections
import datetime
import enum
import os
import pathlib
import signal

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from torch import nn

STARTS = []  # runner.iter at the start of each train() (RecordStartHook)


@MODELS.register_module(force=True)
class ToyBCNNet(BaseModel):
    """ConvModule(3 -> channels, WS conv, BCN) -> global mean -> Linear."""

    def __init__(self, channels=8, classes=2, conv_cfg=dict(type='WSConv'),
                 norm_cfg=dict(type='BCN', num_groups=2),
                 data_preprocessor=None):
        super().__init__(data_preprocessor)
        self.stem = ConvModule(3, channels, 3, padding=1, conv_cfg=conv_cfg,
                               norm_cfg=norm_cfg)
        self.head = nn.Linear(channels, classes)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.stem(inputs).mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        if mode == 'predict':
            return [dict(pred=int(p), label=int(t))
                    for p, t in zip(logits.argmax(1), labels)]
        return logits


@MODELS.register_module(force=True)
class ToyOtherNet(BaseModel):
    """Another model: different keys."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor)
        self.body = nn.Conv2d(3, 4, 1)
        self.classifier = nn.Linear(4, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.classifier(self.body(inputs).mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


@DATASETS.register_module(force=True)
class ToyRandomDataset(torch.utils.data.Dataset):
    """``size`` random 3x8x8 images; the label is whether the red channel
    is brighter than the green one."""

    metainfo = dict(classes=('green', 'red'))

    def __init__(self, size=16, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 8, 8, generator=gen)
        self.labels = (self.images[:, 0].mean((1, 2)) >
                       self.images[:, 1].mean((1, 2))).long()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return dict(inputs=self.images[i], labels=self.labels[i])


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results += [s['pred'] == s['label'] for s in data_samples]

    def compute_metrics(self, results):
        return dict(accuracy=float(np.mean(results)))


class Colour(enum.Enum):
    RED = 1
    GREEN = 'g'


def awkward_objects():
    """Objects that mmengine or a user hook may put into a checkpoint and
    that weights-only unpickling refuses as they are."""
    buffer = HistoryBuffer()
    buffer.update(1.5, 2)
    return {
        'set': {1, 'a'},
        'frozenset': frozenset({2}),
        'path': pathlib.Path('/data/coco'),
        'datetime': datetime.datetime(2026, 12, 1, 8, 30, 5, 123,
                                      tzinfo=datetime.timezone.utc),
        'date': datetime.date(2026, 12, 1),
        'timedelta': datetime.timedelta(hours=3, microseconds=5),
        'enum': Colour.GREEN,
        'bytes': b'\x00\xffraw',
        'np_float': np.float64(0.25),
        'np_int': np.int64(7),
        'np_bool': np.bool_(True),
        'np_array': np.arange(6, dtype=np.float32).reshape(2, 3),
        'np_uint16': np.array([1, 65535], dtype=np.uint16),
        'np_strings': np.array(['a', 'bc']),
        'np_dtype': np.dtype('float16'),
        'np_datetime64': np.datetime64('2026-12-01T08:30:05'),
        'np_datetime_array': np.array(['2026-01-01', '2026-06-30'],
                                      dtype='datetime64[D]'),
        'np_keys': {np.int64(3): 'three', np.str_('k'): 1.0},
        'tuple_keys': {(1, 'x'): [np.float32(1.5)]},
        'counter': collections.Counter({'a': 2}),
        'history': buffer,
        'ordered': collections.OrderedDict(b=1, a=2),
    }


@HOOKS.register_module(force=True)
class PutInCheckpointHook(Hook):
    """Put ``awkward_objects()`` (``what='awkward'``) or an object nothing
    can encode (``what='unencodable'``) into ``meta['extra']`` of the
    checkpoint of iteration ``at_iter`` (every one if None)."""
    priority = 'NORMAL'  # before WeightsOnlyCheckpointHook (LOWEST)

    def __init__(self, what='awkward', at_iter=None):
        self.what, self.at_iter = what, at_iter

    def before_save_checkpoint(self, runner, checkpoint):
        if self.at_iter not in (None, checkpoint['meta']['iter']):
            return
        checkpoint['meta']['extra'] = (awkward_objects()
                                       if self.what == 'awkward' else
                                       {'fine': 1, 'bad': nn.ReLU()})


@HOOKS.register_module(force=True)
class KillWhileSavingHook(Hook):
    """SIGKILL this process while it saves the checkpoint of ``at_iter``
    (after CheckpointHook's deletions, before the file is written), once:
    only if the file ``once`` does not exist yet (it is created)."""
    priority = 'LOWEST'

    def __init__(self, at_iter, once):
        self.at_iter, self.once = at_iter, once

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['iter'] == self.at_iter and \
                not os.path.exists(self.once):
            open(self.once, 'w').close()
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(force=True)
class RecordStartHook(Hook):

    def before_train(self, runner):
        STARTS.append(runner.iter)
