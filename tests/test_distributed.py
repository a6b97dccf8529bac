"""BCN and SyncBCN in 2 real gloo processes against one process on the
concatenated batch."""
import pytest
import torch
import torch.distributed as dist

from bcn_reference import (ReferenceAlgorithm1, randomize, reference_bcn,
                           reference_large_batch)
from dist_utils import run_distributed
from mmbcn import ops
from mmbcn.ops import BatchChannelNorm, SyncBatchChannelNorm

pytestmark = pytest.mark.dist

D = torch.float64
# Unequal local batches: the combination must weight by element count.
SPLITS = ([0, 1], [1, 4])


def full_batch(step):
    g = torch.Generator().manual_seed(step)
    return 2.0 + 3.0 * torch.randn(4, 8, 5, 5, generator=g, dtype=D)


def local(x, rank):
    return x[SPLITS[rank][0]:SPLITS[rank][1]]


def gather(t):
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def _synchronized_estimates(rank, world, backend='auto'):
    ops.set_backend(backend)
    layer = randomize(BatchChannelNorm(8, 4, estimate=True).to(D))
    layer.reset_running_stats()
    ref = ReferenceAlgorithm1(8)
    for step, rate in enumerate([0.5, 0.1, 0.3]):
        layer.update_rate = rate
        x = full_batch(step)
        y = layer(local(x, rank))
        expected = ref(x, layer, rate)
        torch.testing.assert_close(y, local(expected, rank))
        torch.testing.assert_close(layer.running_mean, ref.mu)
        torch.testing.assert_close(layer.running_var, ref.var)
    for name in ('running_mean', 'running_var'):
        a, b = gather(getattr(layer, name))
        assert torch.equal(a, b), f'{name} differs across ranks'
    # A rank with no samples (a mask head without positive RoIs) still
    # joins the collective; both ranks move to the other rank's statistics.
    layer.update_rate = 1.0
    x = full_batch(9)
    part = x[:0] if rank == 0 else x[:2]
    assert layer(part).shape[0] == part.shape[0]
    ref.step(x[:2], 1.0)
    torch.testing.assert_close(layer.running_mean, ref.mu)


@pytest.mark.parametrize('backend', ['auto', 'triton'])
def test_estimates_are_synchronized_and_exact(backend):
    """Through the reference, and through the Triton kernels (which
    combine the per-channel statistics between their passes; the empty
    rank below takes the reference's path and joins the same
    collective)."""
    if ops.BACKENDS[backend].unavailable() if backend != 'auto' else None:
        pytest.skip(ops.BACKENDS[backend].unavailable())
    run_distributed(_synchronized_estimates, 2, backend)


def _unsynchronized_estimates(rank, world):
    layer = BatchChannelNorm(8, 4, estimate=True, sync_estimates=False,
                             update_rate=0.5).to(D)
    ref = ReferenceAlgorithm1(8)
    x = local(full_batch(0), rank)
    layer(x)
    ref.step(x, 0.5)
    torch.testing.assert_close(layer.running_mean, ref.mu)
    a, b = gather(layer.running_mean)
    assert not torch.allclose(a, b)


def test_paper_setting_keeps_estimates_per_process():
    run_distributed(_unsynchronized_estimates, 2)


def _sync_bcn(rank, world):
    torch.manual_seed(0)
    sync = randomize(SyncBatchChannelNorm(8, 4).to(D))
    single = randomize(BatchChannelNorm(8, 4).to(D))
    x = full_batch(0)
    dy = full_batch(1)
    x_local = local(x, rank).clone().requires_grad_()
    y_local = sync(x_local)
    y_local.backward(local(dy, rank))

    x_full = x.clone().requires_grad_()
    y_full = single(x_full)
    y_full.backward(dy)
    torch.testing.assert_close(
        y_local, local(reference_large_batch(x, single), rank))
    torch.testing.assert_close(y_local, local(y_full, rank))
    torch.testing.assert_close(x_local.grad, local(x_full.grad, rank))
    for name in ('batch_weight', 'batch_bias', 'weight', 'bias'):
        grad = getattr(sync, name).grad.clone()
        dist.all_reduce(grad)  # what DDP does with the parameters' grads
        torch.testing.assert_close(grad, getattr(single, name).grad)
    torch.testing.assert_close(sync.running_mean, single.running_mean)
    torch.testing.assert_close(sync.running_var, single.running_var)
    sync.eval()
    torch.testing.assert_close(
        sync(x_local.detach()),
        local(reference_bcn(x, sync.running_mean, sync.running_var,
                            sync.batch_weight, sync.batch_bias, sync.weight,
                            sync.bias, 4), rank))


def test_sync_bcn_equals_bcn_on_concatenated_batch():
    run_distributed(_sync_bcn, 2)


def _sync_bcn_estimates(rank, world):
    """SyncBCN in micro-batch mode: Algorithm 1 on the concatenated batch,
    identical estimates on both ranks."""
    layer = randomize(SyncBatchChannelNorm(8, 4, estimate=True).to(D))
    layer.reset_running_stats()
    ref = ReferenceAlgorithm1(8)
    for step, rate in enumerate([0.5, 0.2]):
        layer.update_rate = rate
        x = full_batch(step)
        torch.testing.assert_close(layer(local(x, rank)),
                                   local(ref(x, layer, rate), rank))
    torch.testing.assert_close(layer.running_var, ref.var)
    a, b = gather(layer.running_var)
    assert torch.equal(a, b)


def test_sync_bcn_estimates_are_algorithm1_on_the_joined_batch():
    run_distributed(_sync_bcn_estimates, 2)


def _layers_in_different_orders(rank, world):
    first = BatchChannelNorm(8, 4, estimate=True, update_rate=0.1).to(D)
    second = BatchChannelNorm(8, 4, estimate=True, update_rate=0.1).to(D)
    order = (first, second) if rank == 0 else (second, first)
    x = full_batch(0)[:2]
    try:
        for layer in order:
            layer(x)
    except RuntimeError as error:
        assert 'different layers' in str(error)
        return
    raise AssertionError('mixed statistics of two layers went unnoticed')


def test_layers_run_in_different_orders_are_refused():
    """Same shapes, different layers at the same collective: without the
    first-synchronization check their statistics would silently mix."""
    run_distributed(_layers_in_different_orders, 2)


def _broadcast_buffers(rank, world):
    from types import SimpleNamespace

    from mmengine.logging import MMLogger
    from torch.nn.parallel import DistributedDataParallel

    from mmbcn.engine import BCNUpdateRateHook

    def runner(sync_estimates, broadcast_buffers):
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 1),
            BatchChannelNorm(8, 4, estimate=True,
                             sync_estimates=sync_estimates))
        ddp = DistributedDataParallel(model,
                                      broadcast_buffers=broadcast_buffers)
        return SimpleNamespace(model=ddp,
                               logger=MMLogger.get_current_instance())

    hook = BCNUpdateRateHook()
    with pytest.raises(ValueError, match='broadcast_buffers=False'):
        hook.before_train(runner(False, True))
    hook.before_train(runner(False, False))  # per-process, honoured
    hook.before_train(runner(True, True))  # identical estimates anyway


def test_unsynchronized_estimates_refuse_buffer_broadcast():
    """DDP's broadcast_buffers=True would copy rank 0's estimates over
    sync_estimates=False: the update-rate hook refuses, naming the key."""
    run_distributed(_broadcast_buffers, 2)
