# Copyright (c) mmbcn contributors. All rights reserved.
"""SingularityHook inside a real mmengine Runner: the logged scalars exist,
at the right steps, with the values of a case whose statistics are known."""
import glob
import json
import math
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import mmbcn  # noqa: F401
from mmbcn.engine import SingularityHook
from mmbcn.ops import BatchChannelNorm

MEAN = [0.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]
STD = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 6.0]


def known_inputs(num=4, side=4):
    """(num, 8, side, side): channel c has exactly mean MEAN[c] and
    unbiased std STD[c] over (N, H, W), so every batch of all of it has the
    same statistics."""
    z = torch.randn(num, 8, side, side, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    var, avg = torch.var_mean(z, dim=(0, 2, 3), keepdim=True)
    z = (z - avg) / var.sqrt()
    view = (1, -1, 1, 1)
    return (torch.tensor(MEAN, dtype=torch.float64).view(view) +
            torch.tensor(STD, dtype=torch.float64).view(view) * z).float()


def plain_stat_diff(mean, std, size):
    out = []
    for g in range(len(mean) // size):
        mu = np.asarray(mean[g * size:(g + 1) * size], dtype=np.float64)
        sigma = np.asarray(std[g * size:(g + 1) * size], dtype=np.float64)
        out.append(
            math.sqrt(max((mu**2).mean() - mu.mean()**2, 0)) / sigma.mean())
    return out


class Images(Dataset):

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i])


class NormBranches(BaseModel):
    """The same input through a GN (and optionally LN, BN, BCN) layer;
    the loss touches every output. With lr = 0 nothing moves."""

    def __init__(self, all_types=False):
        super().__init__()
        self.gn = nn.GroupNorm(2, 8)
        with torch.no_grad():
            self.gn.bias[1] = -100.0  # channel 1 never above 0: dead
            self.gn.weight[2] = 1e-4  # channel 2 tiny next to channel 3
        self.others = nn.ModuleList()
        if all_types:
            bcn = BatchChannelNorm(8, num_groups=2)
            with torch.no_grad():
                bcn.batch_weight.copy_(torch.tensor([1.0] * 4 + [2.0] * 4))
                bcn.batch_bias.copy_(torch.tensor([0.0] * 4 + [-1, 1, -1, 1]))
            self.others.extend(
                [nn.LayerNorm([8, 4, 4]),
                 nn.BatchNorm2d(8), bcn])

    def forward(self, inputs, data_samples=None, mode='loss'):
        outs = [self.gn(inputs)] + [m(inputs) for m in self.others]
        return dict(loss=sum(F.relu(o).mean() for o in outs))


def run(tmp_path, model, train_cfg, hook):
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'singularity_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=Images(known_inputs()),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        custom_hooks=[hook],
        default_hooks=dict(
            checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=train_cfg.get('by_epoch', True)),
        visualizer=dict(
            type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        default_scope=None)
    runner.train()
    (scalars, ) = glob.glob(
        osp.join(str(tmp_path), '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        lines = [json.loads(line) for line in f]
    logged = [r for r in lines if 'singularity/stat_diff_mean' in r]
    (log_file, ) = glob.glob(osp.join(str(tmp_path), '*', '*.log'))
    with open(log_file) as f:
        text = f.read()
    return runner, logged, text


def test_hook_is_registered_and_checks_arguments():
    assert HOOKS.get('SingularityHook') is SingularityHook
    with pytest.raises(ValueError, match='interval'):
        SingularityHook(interval=0)
    with pytest.raises(ValueError, match='momentum'):
        SingularityHook(momentum=0)
    with pytest.raises(ValueError, match='scale_ratio'):
        SingularityHook(scale_ratio=2)


@pytest.mark.slow
def test_hook_logs_known_values_every_epoch(tmp_path):
    runner, logged, text = run(
        tmp_path, NormBranches(),
        dict(by_epoch=True, max_epochs=3, val_interval=10),
        dict(type='SingularityHook', interval=1))
    assert [r['step'] for r in logged] == [1, 2, 3]
    # GN groups (0-3) and (4-7): Eq. 8 of the known channel statistics
    groups = plain_stat_diff(MEAN, STD, 4)
    assert groups == pytest.approx([math.sqrt(1.25), 0.0])
    for r in logged:
        assert r['singularity/stat_diff_mean'] == pytest.approx(
            np.mean(groups), rel=1e-5)
        assert r['singularity/stat_diff_std'] == pytest.approx(
            np.std(groups), rel=1e-5)
        # channel 1 dead; channels 1 and 2 below 1% of their group's best
        assert r['singularity/dead_fraction'] == pytest.approx(1 / 8)
        assert r['singularity/small_scale_fraction'] == pytest.approx(2 / 8)
    assert 'SingularityHook Epoch 3: stat_diff_mean: 0.5590' in text
    # the hooks are gone after training
    assert not runner.model.gn._forward_pre_hooks


@pytest.mark.slow
def test_hook_every_n_iterations_all_norm_types(tmp_path):
    model = NormBranches(all_types=True)
    runner, logged, text = run(tmp_path, model,
                               dict(by_epoch=False, max_iters=4),
                               dict(type='SingularityHook', interval=2,
                                    by_epoch=False))
    assert [r['step'] for r in logged] == [2, 4]
    ln, bn, bcn = model.others
    # GN: 2 groups; LN: 1 group of all 8 channels; BN: 8 channels alone
    # (0 each); BCN: its group step's input, mean batch_bias and std
    # |batch_weight| (times sqrt(v / (v + eps)) ~ 1)
    shrink = (bcn.running_var / (bcn.running_var + bcn.eps)).sqrt()
    groups = (
        plain_stat_diff(MEAN, STD, 4) + plain_stat_diff(MEAN, STD, 8) +
        [0.0] * 8 + plain_stat_diff(bcn.batch_bias.tolist(),
                                    (bcn.batch_weight.abs() * shrink).tolist(),
                                    4))
    assert plain_stat_diff(bcn.batch_bias.tolist(),
                           bcn.batch_weight.tolist(), 4) == [0.0, 0.5]
    # the per-channel fractions of the same batch, computed directly
    x = known_inputs()
    outs = [model.gn(x), ln(x), bn(x), bcn(x)]
    dead, small = [], []
    for out, size in zip(outs, (4, 8, 1, 4)):
        relu = F.relu(out)
        rms = relu.pow(2).mean((0, 2, 3)).sqrt()
        for c in range(8):
            g = c // size
            dead.append(bool(relu[:, c].max() == 0))
            small.append(
                bool(rms[c] < 0.01 * rms[g * size:(g + 1) * size].max()))
    assert dead[1] and small[1] and small[2]
    for r in logged:
        assert r['singularity/stat_diff_mean'] == pytest.approx(
            np.mean(groups), rel=1e-5)
        assert r['singularity/stat_diff_std'] == pytest.approx(
            np.std(groups), rel=1e-5)
        assert r['singularity/dead_fraction'] == pytest.approx(np.mean(dead))
        assert r['singularity/small_scale_fraction'] == pytest.approx(
            np.mean(small))
    assert 'SingularityHook Iter 4:' in text
