"""Config of the toy model (tests/helpers/mmbcn_toy.py) for real runs of
tools/train.py and tools/test.py that take about a second."""
from mmengine.config import Config

LOADER = dict(batch_size=4, num_workers=0, persistent_workers=False,
              dataset=dict(type='ToyRandomDataset', size=16),
              sampler=dict(type='DefaultSampler', shuffle=False),
              collate_fn=dict(type='default_collate'))


def toy_config(tmp_path, name='toy.py', max_iters=4, interval=2,
               max_keep_ckpts=-1, hooks=(), model=None, **extra):
    """Write the config (``extra``: more top-level keys); returns its
    path. ``hooks``: the custom hooks (dicts)."""
    cfg = dict(
        default_scope='mmengine',
        custom_imports=dict(imports=['mmbcn', 'mmbcn_toy'],
                            allow_failed_imports=False),
        model=model or dict(type='ToyBCNNet', conv_cfg=dict(type='WSConv'),
                            norm_cfg=dict(type='BCN', num_groups=2)),
        train_dataloader=LOADER,
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters,
                       val_interval=10**6),
        test_dataloader=LOADER,
        test_cfg=dict(type='TestLoop'),
        test_evaluator=dict(type='ToyAccuracy'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01,
                                          momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[100],
                             by_epoch=False),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=interval,
                            by_epoch=False, max_keep_ckpts=max_keep_ckpts),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0),
        log_level='WARNING',
        **extra)
    path = str(tmp_path / name)
    Config(cfg).dump(path)
    return path
