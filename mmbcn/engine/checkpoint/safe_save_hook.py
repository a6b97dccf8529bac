# Copyright (c) mmbcn contributors. All rights reserved.
"""mmengine's CheckpointHook, with the old checkpoint kept until the new
one is complete and loadable."""
import contextlib
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from mmbcn.utils import atomic_outputs, remove_stale_temporaries
from .load import load_weights_only


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` (same arguments) whose
    periodic checkpoints are written safely.

    mmengine deletes the oldest kept checkpoint (``max_keep_ckpts``)
    *before* it writes the new one and writes that in place, so a failure or
    a kill while saving (full disk, an object ``torch.save`` or
    :class:`WeightsOnlyCheckpointHook` refuses) can leave no usable
    checkpoint at all. Here the new checkpoint is written to a temporary
    file, read back with ``torch.load(weights_only=True)`` (memory-mapped:
    cheap), renamed into place, and only then is the oldest one deleted and
    ``last_checkpoint`` replaced (atomically). Any failure leaves the
    previous checkpoints and ``last_checkpoint`` as they were. Before
    training, temporary files that a killed save left behind are removed;
    one that another live process is writing (it holds a lock on it) is
    kept.

    ``tools/train.py`` uses it for ``default_hooks.checkpoint``; in other
    tools set ``default_hooks = dict(checkpoint=dict(
    type='SafeCheckpointHook', ...))``. Checkpoints on other storage
    backends (not local files) are saved as mmengine does.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if isinstance(self.file_backend, LocalBackend) and \
                is_main_process():
            # temporary files of a save that was killed; one that a live
            # run is writing is locked and kept
            removed = remove_stale_temporaries(
                self.out_dir, r'\..+\.pth\.[^.]+\.part\.pth')
            if removed:
                runner.logger.info(
                    f'removed {len(removed)} temporary file(s) of an '
                    f'interrupted save: {", ".join(removed)}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        keeping = self.max_keep_ckpts > 0
        kept = list(self.keep_ckpt_ids) if keeping else []
        dropped = None
        if keeping and not (kept and kept[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # the checkpoint records the state after this save (as
            # mmengine's does)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        path = osp.join(self.out_dir, filename)
        previous = self.last_ckpt
        runner.message_hub.update_info('last_ckpt', path)
        try:
            self._write(runner, path, meta)
        except BaseException:
            if keeping:
                self.keep_ckpt_ids.clear()
                self.keep_ckpt_ids.extend(kept)
                runner.message_hub.update_info('keep_ckpt_ids', kept)
            runner.message_hub.update_info('last_ckpt', previous)
            raise
        self.last_ckpt = path
        if not is_main_process():
            return
        if dropped is not None and dropped != step:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(osp.join(self.out_dir,
                                   self.filename_tmpl.format(dropped)))
        with atomic_outputs(osp.join(runner.work_dir,
                                     'last_checkpoint')) as (tmp, ):
            with open(tmp, 'w') as f:
                f.write(path)

    def _write(self, runner, path: str, meta) -> None:
        """Save to a temporary file beside ``path``, check it loads with
        weights_only, rename (every rank calls ``save_checkpoint``: it
        saves on the main process only)."""
        with contextlib.ExitStack() as stack:
            tmp = None
            if is_main_process():
                (tmp, ) = stack.enter_context(atomic_outputs(path))
            runner.save_checkpoint(
                osp.dirname(tmp or path),
                osp.basename(tmp or path),
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
            if tmp is not None:
                try:
                    load_weights_only(tmp, 'cpu', name=path, mmap=True)
                except Exception as err:
                    raise RuntimeError(
                        f'{path} was not written: the saved checkpoint does '
                        f'not load back with weights_only=True ({err}); the '
                        'previous checkpoints are kept') from err
