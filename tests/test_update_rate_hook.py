"""BCNUpdateRateHook inside a real mmengine Runner."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from mmbcn.ops import BatchChannelNorm


class TinyNet(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = BatchChannelNorm(8, 4, estimate=True)
        self.head = nn.Conv2d(8, 8, 1)
        self.norm2 = BatchChannelNorm(8, 2, estimate=True)

    def forward(self, inputs, mode='loss'):
        out = self.norm2(self.head(torch.relu(self.norm(self.conv(inputs)))))
        return dict(loss=out.pow(2).mean())


class Images(torch.utils.data.Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=1.0 + torch.randn(3, 8, 8, generator=g))


class Recorder(Hook):
    """Runs after BCNUpdateRateHook (lower priority) and records r and lr."""
    priority = 'LOW'

    def __init__(self):
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        lrs = runner.optim_wrapper.get_lr()['lr']
        self.seen.append((model.norm.update_rate, model.norm2.update_rate,
                          lrs))


def make_runner(tmp_path, hooks, paramwise_cfg=None):
    return Runner(
        model=TinyNet(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=Images(), batch_size=1, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
            paramwise_cfg=paramwise_cfg),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                 begin=0, end=4)
        ],
        train_cfg=dict(by_epoch=False, max_iters=6, val_interval=100),
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=100)),
        default_scope='mmengine')


@pytest.mark.slow
def test_rate_follows_learning_rate_with_warmup(tmp_path):
    recorder = Recorder()
    runner = make_runner(tmp_path, [dict(type='BCNUpdateRateHook'),
                                    recorder])
    runner.train()
    rates = [r for r, _, _ in recorder.seen]
    lrs = [lr[0] for _, _, lr in recorder.seen]
    assert len(rates) == 6
    assert rates == pytest.approx(lrs)
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(
        0.1)  # warm-up moved it
    assert not torch.equal(runner.model.norm.running_mean, torch.zeros(8))


@pytest.mark.slow
def test_multiplier_and_parameter_group_rates(tmp_path):
    recorder = Recorder()
    runner = make_runner(
        tmp_path, [dict(type='BCNUpdateRateHook', multiplier=0.5), recorder],
        paramwise_cfg=dict(custom_keys={'norm2': dict(lr_mult=0.1)}))
    runner.train()
    rate, rate2, lrs = recorder.seen[-1]
    assert rate == pytest.approx(0.5 * 0.1)
    assert rate2 == pytest.approx(0.5 * 0.1 * 0.1)


def test_training_without_the_hook_names_it(tmp_path):
    runner = make_runner(tmp_path, [])
    with pytest.raises(RuntimeError, match='BCNUpdateRateHook'):
        runner.train()


def test_bad_multiplier_and_warmup():
    from mmbcn.engine import BCNUpdateRateHook
    with pytest.raises(ValueError, match='multiplier'):
        BCNUpdateRateHook(multiplier=-1)
    with pytest.raises(ValueError, match='warmup_iters'):
        BCNUpdateRateHook(warmup_iters=-1)


@pytest.mark.slow
def test_multiplier_zero_freezes_the_estimates(tmp_path):
    runner = make_runner(tmp_path, [dict(type='BCNUpdateRateHook',
                                         multiplier=0)])
    runner.train()
    assert torch.equal(runner.model.norm.running_mean, torch.zeros(8))
    assert torch.equal(runner.model.norm.running_var, torch.ones(8))


@pytest.mark.slow
def test_warmup_is_a_cumulative_average_then_the_paper_rate(tmp_path):
    """warmup_iters=T: r = max(1/t, lr) for t <= T, then r = lr; the
    estimates after the first iteration are that batch's statistics."""
    recorder = Recorder()
    runner = make_runner(tmp_path, [
        dict(type='BCNUpdateRateHook', warmup_iters=4), recorder
    ])
    seen = {}

    class FirstBatch(Hook):
        """The first batch's channel means at the first layer, and its
        estimates after that iteration."""
        priority = 'LOWEST'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            def record(module, args, out):
                seen['batch_mean'] = args[0].detach().mean((0, 2, 3))

            if batch_idx == 0:
                seen['handle'] = runner.model.norm.register_forward_hook(
                    record)

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            if batch_idx == 0:
                seen['handle'].remove()
                seen['estimate'] = runner.model.norm.running_mean.clone()

    runner.register_hook(FirstBatch())
    runner.train()
    rates = [r for r, _, _ in recorder.seen]
    lrs = [lr[0] for _, _, lr in recorder.seen]
    assert rates[:4] == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])
    assert rates[4:] == pytest.approx(lrs[4:])
    # t = 1, r = 1: the estimate is the first batch's mean, not 0
    assert torch.allclose(seen['estimate'], seen['batch_mean'], atol=1e-6)


@pytest.mark.slow
def test_warmup_leaves_loaded_estimates_to_the_paper_rate(tmp_path):
    """Estimates loaded before training (a pretrained backbone) are data:
    the warm-up's r = 1 at t = 1 would replace them with one micro-batch's
    statistics, so only layers still at (0, 1) get the warm-up."""
    recorder = Recorder()
    runner = make_runner(tmp_path, [
        dict(type='BCNUpdateRateHook', warmup_iters=4), recorder
    ])
    pretrained = runner.model.norm
    pretrained.running_mean.fill_(0.5)
    pretrained.running_var.fill_(2.0)
    pretrained.num_batches_tracked.fill_(1000)
    runner.train()
    loaded = [r for r, _, _ in recorder.seen]
    fresh = [r for _, r, _ in recorder.seen]
    lrs = [lr[0] for _, _, lr in recorder.seen]
    assert loaded == pytest.approx(lrs)  # the paper's rate throughout
    assert fresh[:4] == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])
    # r = lr <= 0.1 for 6 steps: the estimates moved, but not to one batch
    assert (pretrained.running_var > 1.2).all()


@pytest.mark.parametrize('multiplier', [float('nan'), float('inf'), -0.5])
def test_multiplier_that_is_not_a_rate_is_refused(multiplier):
    from mmbcn.engine import BCNUpdateRateHook
    with pytest.raises(ValueError, match=r'multiplier=.* finite number >= 0'):
        BCNUpdateRateHook(multiplier=multiplier)


@pytest.mark.parametrize('multiplier', ['1', None, True])
def test_multiplier_that_is_not_a_number_is_refused(multiplier):
    from mmbcn.engine import BCNUpdateRateHook
    with pytest.raises(TypeError, match='multiplier=.* must be a number'):
        BCNUpdateRateHook(multiplier=multiplier)


@pytest.mark.parametrize('warmup', [float('nan'), float('inf'), 2.5, '3',
                                    None])
def test_warmup_iters_that_is_not_whole_is_refused(warmup):
    from mmbcn.engine import BCNUpdateRateHook
    with pytest.raises(TypeError, match='warmup_iters=.* whole number'):
        BCNUpdateRateHook(warmup_iters=warmup)


def test_whole_float_warmup_iters_is_accepted():
    from mmbcn.engine import BCNUpdateRateHook
    assert BCNUpdateRateHook(warmup_iters=100.0).warmup_iters == 100


@pytest.mark.slow
def test_rate_comes_from_the_batch_steps_parameter_group(tmp_path):
    """Algorithm 1 estimates the batch step's statistics: r follows the
    group of ``batch_weight``; an lr multiplier on the group step's
    ``weight`` leaves it alone."""
    recorder = Recorder()
    runner = make_runner(
        tmp_path, [dict(type='BCNUpdateRateHook'), recorder],
        paramwise_cfg=dict(custom_keys={
            'norm.weight': dict(lr_mult=0),
            'norm2.batch_weight': dict(lr_mult=0.5)
        }))
    runner.train()
    rate, rate2, lrs = recorder.seen[-1]
    assert rate == pytest.approx(0.1)
    assert rate2 == pytest.approx(0.5 * 0.1)
    assert not torch.equal(runner.model.norm.running_mean, torch.zeros(8))
