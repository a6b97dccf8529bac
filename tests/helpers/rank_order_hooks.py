"""Hooks that make two processes of a distributed test run mmengine's
``LoggerHook.after_test_epoch`` in a fixed order (rank 0 first, then rank
1) and put the rank into the logged metrics, so that a test can tell
deterministically which process wrote the metrics file last."""
from mmengine.dist import barrier
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class RankInTestMetricsHook(Hook):
    """Before the logger hook: record this process's rank as the test
    metric ``written_by_rank``; rank 1 then waits until rank 0 has run its
    logger hook (the barrier pairs with :class:`RankZeroLoggedHook`)."""
    priority = 'NORMAL'  # LoggerHook is BELOW_NORMAL

    def after_test_epoch(self, runner, metrics=None):
        runner.message_hub.update_info('test/written_by_rank', runner.rank)
        if runner.rank == 1:
            barrier()


@HOOKS.register_module(force=True)
class RankZeroLoggedHook(Hook):
    """After the logger hook: rank 0 releases rank 1."""
    priority = 'LOW'

    def after_test_epoch(self, runner, metrics=None):
        if runner.rank == 0:
            barrier()
