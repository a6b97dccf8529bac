# Copyright (c) mmbcn contributors. All rights reserved.
"""mmbcn.analysis: StatDiff (Eq. 8), channel measures, the layer probes,
the fixed-statistics norm (Eq. 6-7), the experiment models and data."""
import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import mmbcn  # noqa: F401
from fake_cifar import write_fake_cifar
from mmbcn.analysis import (ActivationSummary, CifarResNet, FixedStatNorm,
                            FourLayerConvNet, SingularityProbe,
                            dead_channel_fraction, draw_target_statistics,
                            load_cifar10, small_scale_fraction, stat_diff)
from mmbcn.analysis.datasets import standardize
from mmbcn.ops import BatchChannelNorm


def plain_stat_diff(mean, std, num_groups):
    """Eq. 8 written out, one group of contiguous channels at a time."""
    mean = [float(v) for v in mean]
    std = [float(v) for v in std]
    size = len(mean) // num_groups
    out = []
    for g in range(num_groups):
        mu = mean[g * size:(g + 1) * size]
        sigma = std[g * size:(g + 1) * size]
        e_mu2 = sum(m * m for m in mu) / size
        e_mu = sum(mu) / size
        out.append(math.sqrt(max(e_mu2 - e_mu**2, 0.0)) / (sum(sigma) / size))
    return out


def with_stats(mean, std, shape=(6, 5, 5), seed=0):
    """(N, C, H, W) data whose channel c has exactly mean[c] and unbiased
    std[c] over (N, H, W)."""
    z = torch.randn(shape[0], len(mean), *shape[1:],
                    generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    var, avg = torch.var_mean(z, dim=(0, 2, 3), keepdim=True)
    z = (z - avg) / var.sqrt()
    view = (1, -1, 1, 1)
    x = torch.tensor(mean, dtype=torch.float64).view(view) + torch.tensor(
        std, dtype=torch.float64).view(view) * z
    return x.float()


# ---------------------------------------------------------------- StatDiff


def test_stat_diff_equal_channels_is_zero():
    mean = torch.tensor([0.3] * 4 + [-2.0] * 4 + [7.0] * 4)
    std = torch.tensor([1.0, 2.0, 3.0, 4.0] * 3)
    assert torch.equal(stat_diff(mean, std, 3), torch.zeros(3))


def test_stat_diff_known_value():
    # group 0: means (0, 2) -> population std 1; stds (1, 3) -> mean 2
    # group 1: means (1, 1, ...) equal -> 0
    out = stat_diff([0.0, 2.0, 1.0, 1.0], [1.0, 3.0, 0.5, 0.5], 2)
    assert torch.allclose(out, torch.tensor([0.5, 0.0]))
    # one group of four: means (-3, -1, 1, 3): E[mu^2] = 5, E[mu] = 0;
    # stds average 2.5 -> sqrt(5) / 2.5
    out = stat_diff([-3.0, -1.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0], 1)
    assert out.item() == pytest.approx(math.sqrt(5) / 2.5, rel=1e-6)


def test_stat_diff_matches_plain_formula():
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(64, generator=gen, dtype=torch.float64) * 3 + 1
    std = torch.rand(64, generator=gen, dtype=torch.float64) * 2 + 0.1
    for groups in (1, 2, 8, 64):
        out = stat_diff(mean, std, groups)
        assert out.shape == (groups, ) and out.dtype == torch.float64
        assert out.tolist() == pytest.approx(
            plain_stat_diff(mean, std, groups), rel=1e-9, abs=1e-12)


def test_stat_diff_groups_are_contiguous_and_scale_free():
    mean = torch.tensor([0.0, 1.0, 5.0, 5.0])
    std = torch.ones(4)
    # contiguous: channels (0, 1) and (2, 3), not (0, 2) and (1, 3)
    assert stat_diff(mean, std, 2).tolist() == pytest.approx([0.5, 0.0])
    # shifting every mean changes nothing; scaling means and stds together
    # changes nothing
    assert torch.allclose(
        stat_diff(mean + 10, std, 2), stat_diff(mean, std, 2))
    assert torch.allclose(stat_diff(3 * mean, 3 * std, 2),
                          stat_diff(mean, std, 2))


def test_stat_diff_accepts_numpy_and_rejects_bad_input():
    assert stat_diff(np.array([1, 3]), np.array([1, 1]), 1).item() == 1.0
    with pytest.raises(ValueError, match='num_groups=3 .* 8 channels'):
        stat_diff(torch.zeros(8), torch.ones(8), 3)
    with pytest.raises(ValueError, match='num_groups=0'):
        stat_diff(torch.zeros(8), torch.ones(8), 0)
    with pytest.raises(ValueError, match='same shape'):
        stat_diff(torch.zeros(8), torch.ones(4), 2)
    with pytest.raises(ValueError, match=r'shape \(C,\)'):
        stat_diff(torch.zeros(2, 4), torch.ones(2, 4), 2)
    with pytest.raises(ValueError, match='non-negative'):
        stat_diff(torch.zeros(4), -torch.ones(4), 2)


# ---------------------------------------------------- under-represented


def test_dead_and_small_scale_channels():
    x = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    x[:, 1] = -x[:, 1].abs() - 0.1  # never above 0: dead
    x[:, 2] *= 1e-3  # tiny next to channel 0 of its group
    x[:, 5] = -1.0  # dead, and its group-mates 3, 4 are live
    assert dead_channel_fraction(x) == pytest.approx(2 / 6)
    # groups (0, 1, 2) and (3, 4, 5): small = 1, 2, 5
    assert small_scale_fraction(x, 2) == pytest.approx(3 / 6)
    # each channel its own group: nothing is small
    assert small_scale_fraction(x, 6) == 0.0

    relu = x.clamp(min=0)
    rms = relu.pow(2).mean((0, 2, 3)).sqrt()
    summary = ActivationSummary.of(x)
    assert torch.allclose(summary.scale(), rms)
    expected = [
        bool(rms[c] < 0.01 * rms[3 * (c // 3):3 * (c // 3) + 3].max())
        for c in range(6)
    ]
    assert summary.small_scale(2).tolist() == expected


def test_whole_group_dead_is_dead_not_small():
    x = -torch.rand(4, 4, 2, 2) - 0.5
    x[:, 2:] += 5
    summary = ActivationSummary.of(x)
    assert summary.dead().tolist() == [True, True, False, False]
    assert summary.small_scale(2).tolist() == [False, False, False, False]
    assert summary.small_scale(1).tolist() == [True, True, False, False]


def test_activation_summary_merges_batches_and_channel_last():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 5, generator=gen), torch.randn(
        2, 4, 5, generator=gen)
    whole = ActivationSummary.of(torch.cat([a, b]))
    merged = ActivationSummary.of(a).merge(ActivationSummary.of(b))
    assert torch.allclose(whole.max, merged.max)
    assert torch.allclose(whole.scale(), merged.scale())
    last = ActivationSummary.of(torch.cat([a, b]).transpose(1, 2), 2)
    assert torch.allclose(last.scale(), whole.scale())
    with pytest.raises(ValueError, match='ratio'):
        whole.small_scale(2, ratio=1.5)


# ------------------------------------------------------------- probes


def test_probe_tracks_gn_input_statistics():
    mean = [0.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]
    std = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 6.0]
    model = nn.Sequential(nn.GroupNorm(2, 8))
    probe = SingularityProbe(model)
    assert probe.stat_diffs() == {}  # nothing seen yet
    x = with_stats(mean, std)
    for _ in range(3):
        model(x)
    model.eval()
    model(x + 100)  # eval forwards do not move tracked statistics
    (out, ) = probe.stat_diffs().values()
    assert out.tolist() == pytest.approx(
        plain_stat_diff(mean, std, 2), rel=1e-5, abs=1e-6)
    gn_probe = probe.probes[0]
    assert gn_probe.kind == 'GN' and gn_probe.num_groups == 2
    assert torch.allclose(gn_probe.running_var.sqrt(), torch.tensor(std),
                          rtol=1e-5)
    probe.remove()
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_probe_running_average_follows_momentum():
    model = nn.GroupNorm(1, 2)
    probe = SingularityProbe(model, momentum=0.25)
    model(with_stats([0.0, 0.0], [1.0, 1.0]))
    model(with_stats([4.0, 8.0], [1.0, 1.0]))
    # first batch sets, second moves by 0.25
    assert probe.probes[0].running_mean.tolist() == pytest.approx(
        [1.0, 2.0], abs=1e-5)


def test_probe_layer_norm_channel_last_and_conv():
    mean = [0.0, 2.0, 4.0]
    std = [1.0, 1.0, 4.0]
    x = with_stats(mean, std)  # (N, C, H, W)
    for ln, inputs in ((nn.LayerNorm(3), x.permute(0, 2, 3, 1)),
                       (nn.LayerNorm([3, 5, 5]), x)):
        probe = SingularityProbe(ln)
        ln(inputs)
        (out, ) = probe.stat_diffs().values()
        assert probe.probes[0].kind == 'LN'
        assert out.tolist() == pytest.approx(
            plain_stat_diff(mean, std, 1), rel=1e-5)


def test_probe_batch_norm_is_zero_and_uses_running_stats():
    bn = nn.BatchNorm2d(4)
    probe = SingularityProbe(bn)
    bn(with_stats([0.0, 3.0, -3.0, 9.0], [1.0, 2.0, 3.0, 4.0]))
    mean, std = probe.probes[0].channel_statistics()
    assert torch.equal(mean, bn.running_mean)
    assert torch.allclose(std, bn.running_var.sqrt())
    assert torch.equal(probe.stat_diffs()[''], torch.zeros(4))
    untracked = nn.BatchNorm2d(4, track_running_stats=False)
    probe = SingularityProbe(untracked)
    untracked(with_stats([0.0, 3.0, -3.0, 9.0], [1.0, 2.0, 3.0, 4.0]))
    assert probe.probes[0].running_mean.tolist() == pytest.approx(
        [0.0, 3.0, -3.0, 9.0], abs=1e-5)


def test_probe_bcn_uses_the_group_step_input():
    bcn = BatchChannelNorm(8, num_groups=2)
    with torch.no_grad():
        bcn.batch_bias.copy_(torch.tensor([0., 0, 0, 0, -1, 1, -1, 1]))
        bcn.batch_weight.copy_(torch.tensor([1., -1, 1, 1, 2, 2, 2, 2]))
    probe = SingularityProbe(bcn)
    bcn(with_stats([5.0] * 8, [3.0] * 8))
    shrink = (bcn.running_var / (bcn.running_var + bcn.eps)).sqrt()
    expected = plain_stat_diff(bcn.batch_bias.detach(),
                               bcn.batch_weight.detach().abs() * shrink, 2)
    assert probe.stat_diffs()[''].tolist() == pytest.approx(expected)
    assert expected == pytest.approx([0.0, 0.5], rel=1e-4)
    # ... which are the statistics of the batch step's output (Eq. 13-14)
    # of a batch, computed here directly
    x = with_stats([5.0] * 8, [3.0] * 8, seed=3)
    var, avg = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    view = (1, -1, 1, 1)
    batch_out = (bcn.batch_weight.detach().view(view) *
                 (x - avg.view(view)) / (var.view(view) + bcn.eps).sqrt() +
                 bcn.batch_bias.detach().view(view))
    out_var, out_mean = torch.var_mean(batch_out, dim=(0, 2, 3),
                                       correction=0)
    assert probe.stat_diffs()[''].tolist() == pytest.approx(
        plain_stat_diff(out_mean, out_var.sqrt(), 2), abs=1e-4)


def test_probe_summary_pools_groups_and_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.ReLU(),
                          nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    probe = SingularityProbe(model)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with probe.capture():
        model(x)
    model(x)  # outside the block: not captured
    summary = probe.summary()
    groups = torch.cat(list(probe.stat_diffs().values()))
    assert groups.shape == (8, )  # 4 GN groups + 4 BN channels
    assert summary['stat_diff_mean'] == pytest.approx(groups.mean().item())
    assert summary['stat_diff_std'] == pytest.approx(
        groups.std(correction=0).item())
    masks = probe.channel_masks()
    assert set(masks) == {'1', '4'}
    dead = torch.cat([masks['1'][0], masks['4'][0]]).float().mean().item()
    assert summary['dead_fraction'] == pytest.approx(dead)
    assert probe.probes[0].summary.count == 4 * 6 * 6


def test_probe_needs_a_norm_layer():
    with pytest.raises(ValueError, match='no BCN, GroupNorm'):
        SingularityProbe(nn.Linear(2, 2))


# ---------------------------------------------------- Eq. 6-7 and models


def test_fixed_stat_norm_zero_sigmas_is_batch_norm():
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    fsn = FixedStatNorm(3, 0.0, 0.0)
    bn = nn.BatchNorm2d(3, affine=False)
    assert torch.allclose(fsn(x), bn(x), atol=1e-6)


def test_fixed_stat_norm_gives_each_channel_its_targets():
    fsn = FixedStatNorm(6, sigma_mu=1.5, sigma_sigma=0.7, seed=3)
    with torch.no_grad():
        fsn.weight.copy_(torch.tensor([1., 2, 1, 1, 0.5, 1]))
        fsn.bias.copy_(torch.tensor([0., 0, 1, 0, 0, -2]))
    x = torch.randn(16, 6, 4, 4) * 5 - 2
    y = fsn(x)
    var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
    # Eq. 7: mean gamma * mu_hat + beta, std |gamma| * sigma_hat
    assert torch.allclose(mean, fsn.weight * fsn.target_mean + fsn.bias,
                          atol=1e-4)
    assert torch.allclose(var.sqrt(), fsn.weight.abs() * fsn.target_std,
                          rtol=1e-3)
    same = FixedStatNorm(6, sigma_mu=1.5, sigma_sigma=0.7, seed=3)
    assert torch.equal(same.target_mean, fsn.target_mean)


def test_target_statistics_follow_eq6():
    gen = torch.Generator().manual_seed(0)
    mean, std = draw_target_statistics(20000, 2.0, 0.5, gen)
    assert mean.mean().item() == pytest.approx(0.0, abs=0.05)
    assert mean.std().item() == pytest.approx(2.0, rel=0.03)
    assert bool((std > 0).all())
    assert std.log().std().item() == pytest.approx(0.5, rel=0.03)
    with pytest.raises(ValueError, match='must be >= 0'):
        draw_target_statistics(4, -1.0, 0.0)


def test_four_layer_conv_net_shape():
    net = FourLayerConvNet(
        1, norm_cfg=dict(type='FixedStatNorm', sigma_mu=1.0, sigma_sigma=1.0))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 32 for c in convs)
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 4
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_cifar_resnet_depth_and_groups():
    net = CifarResNet(14, norm_cfg=dict(type='BCN'), conv_cfg=dict(
        type='WSConv'))
    bcn = [m for m in net.modules() if isinstance(m, BatchChannelNorm)]
    # stem + 2 convs per block (3 stages x 2 blocks) + 2 projections
    assert len(bcn) == 1 + 12 + 2
    assert {(m.num_features, m.num_groups)
            for m in bcn} == {(16, 4), (32, 8), (64, 16)}
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    ln = CifarResNet(8, norm_cfg=dict(type='GN', num_groups=1))
    assert {m.num_groups for m in ln.modules()
            if isinstance(m, nn.GroupNorm)} == {1}
    with pytest.raises(ValueError, match='6n \\+ 2'):
        CifarResNet(10)


# --------------------------------------------------------------- data


def test_load_cifar10_python_format(tmp_path):
    folder = write_fake_cifar(str(tmp_path))
    for path in (str(tmp_path), folder):
        train_x, train_y, test_x, test_y = load_cifar10(path)
        assert train_x.shape == (50, 3, 32, 32)
        assert test_x.shape == (10, 3, 32, 32)
        assert train_y.dtype == torch.long and len(test_y) == 10
        assert train_x.mean((0, 2, 3)).abs().max() < 1e-5
    train_x, train_y, _, test_y = load_cifar10(folder, 20, 4)
    assert len(train_y) == 20 and len(test_y) == 4


def test_load_cifar10_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_cifar10(str(tmp_path / 'nowhere'))
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='is not a folder'):
        load_cifar10(str(tmp_path / 'file'))
    with pytest.raises(ValueError, match='missing data_batch_1'):
        load_cifar10(str(tmp_path))
    folder = write_fake_cifar(str(tmp_path / 'bad'))
    with open(os.path.join(folder, 'test_batch'), 'wb') as f:
        pickle.dump({b'data': np.zeros((2, 10)), b'labels': [0, 1]}, f)
    with pytest.raises(ValueError, match=r'shape \(N, 3072\)'):
        load_cifar10(folder)
    with open(os.path.join(folder, 'test_batch'), 'w') as f:
        f.write('not a pickle')
    with pytest.raises(ValueError, match='not a CIFAR-10 python-format'):
        load_cifar10(folder)


class _Exploit:

    def __reduce__(self):
        return (os.system, ('echo unsafe',))


def test_load_cifar10_refuses_code_in_pickles(tmp_path):
    folder = write_fake_cifar(str(tmp_path))
    with open(os.path.join(folder, 'data_batch_3'), 'wb') as f:
        pickle.dump({b'data': _Exploit(), b'labels': []}, f, protocol=2)
    with pytest.raises(ValueError, match='refusing'):
        load_cifar10(folder)


def test_load_digits_upsampled():
    pytest.importorskip('sklearn')
    from mmbcn.analysis import load_digits
    train_x, train_y, test_x, test_y = load_digits(image_size=16)
    assert train_x.shape == (1348, 1, 16, 16) and test_x.shape == (449, 1, 16,
                                                                   16)
    assert set(train_y.tolist()) == set(range(10))
    assert abs(train_x.mean().item()) < 1e-5
    assert train_x.std().item() == pytest.approx(1.0, rel=1e-3)
    again = load_digits(image_size=16)
    assert torch.equal(again[1], train_y)


def test_standardize_uses_training_statistics():
    train_x = torch.randn(10, 2, 3, 3) * 4 + 2
    test_x = torch.randn(5, 2, 3, 3)
    a, b = standardize(train_x, test_x)
    mean = train_x.mean((0, 2, 3), keepdim=True)
    std = train_x.std((0, 2, 3), keepdim=True)
    assert torch.allclose(b, (test_x - mean) / std)
