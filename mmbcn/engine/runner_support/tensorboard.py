# Copyright (c) mmbcn contributors. All rights reserved.
"""Log training to TensorBoard through mmengine's
``TensorboardVisBackend`` (``tools/train.py --tensorboard``)."""

BACKEND = 'TensorboardVisBackend'


def check_tensorboard() -> None:
    """Raise ImportError, saying what to install, if mmengine's
    TensorBoard backend could not write (it imports
    ``torch.utils.tensorboard``, which needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f'{BACKEND} needs the tensorboard package: pip install '
            f'tensorboard (or mmbcn\'s "deploy" extra) ({err})') from err


def add_tensorboard(cfg) -> None:
    """Add ``TensorboardVisBackend`` to ``cfg.visualizer.vis_backends``
    (kept once); the event files go to ``<work_dir>/<timestamp>/vis_data``.

    The same switch in a config file::

        visualizer = dict(vis_backends=[
            dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
    """
    check_tensorboard()
    visualizer = cfg.get('visualizer')
    if visualizer is None:
        raise KeyError('--tensorboard needs a visualizer in the config '
                       "(mmdet's and mmseg's default_runtime define one)")
    backends = list(visualizer.get('vis_backends') or [])
    if not any(str(b.get('type')).endswith(BACKEND) for b in backends):
        backends.append(dict(type=BACKEND))
    visualizer['vis_backends'] = backends
    # mmdet's and mmseg's runtimes name every visualizer 'visualizer', and
    # mmengine hands back an existing instance of that name (built by an
    # earlier run in this process) without the backend just added: without
    # a name, the Runner gives this run's visualizer its own.
    visualizer.pop('name', None)
