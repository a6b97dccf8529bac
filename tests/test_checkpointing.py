"""BCN under gradient checkpointing (torch.utils.checkpoint, reentrant or
not, and mmdet's ResNet with_cp=True): the recomputation inside the
backward pass normalizes as the first forward did and moves no
statistics, so gradients and statistics equal the plain model's."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bcn_reference import randomize
from mmbcn.ops import BatchChannelNorm


class Block(nn.Module):

    def __init__(self, estimate, use_checkpoint=None):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = randomize(BatchChannelNorm(
            8, 4, estimate=estimate, update_rate=0.3 if estimate else None))
        self.use_checkpoint = use_checkpoint

    def body(self, x):
        return torch.relu(self.norm(self.conv(x)))

    def forward(self, x):
        if self.use_checkpoint is None:
            return self.body(x)
        return checkpoint(self.body, x, use_reentrant=self.use_checkpoint)


def step(model, x, dy):
    x = x.clone().requires_grad_()
    model(x).backward(dy)
    return [x.grad] + [p.grad for p in model.parameters()] + [
        b.clone() for b in model.buffers()]


@pytest.mark.parametrize('estimate', [True, False])
@pytest.mark.parametrize('reentrant', [True, False])
def test_checkpointed_block_equals_plain_block(estimate, reentrant):
    torch.manual_seed(0)
    plain = Block(estimate)
    checkpointed = copy.deepcopy(plain)
    checkpointed.use_checkpoint = reentrant
    x, dy = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    for _ in range(2):
        want = step(plain, x, dy)
        got = step(checkpointed, x, dy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_mmdet_resnet_with_cp_equals_without():
    """The micro-batch setting users turn with_cp on for: BCN estimates +
    WS in mmdet's ResNet."""
    from mmdet.models.backbones import ResNet

    import mmbcn  # noqa: F401
    torch.manual_seed(0)
    cfg = dict(depth=18, norm_cfg=dict(type='BCN', num_groups=8,
                                       estimate=True),
               conv_cfg=dict(type='WSConv'), norm_eval=False)
    plain = ResNet(**cfg)
    checkpointed = ResNet(with_cp=True, **cfg)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model.train()
        for m in model.modules():
            if isinstance(m, BatchChannelNorm):
                m.update_rate = 0.1
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        xi = x.clone().requires_grad_()
        sum(o.square().mean() for o in model(xi)).backward()
        grads.append([xi.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(a, b, msg=name)
