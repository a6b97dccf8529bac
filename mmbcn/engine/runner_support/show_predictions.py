# Copyright (c) mmbcn contributors. All rights reserved.
"""``tools/test.py --show-dir``: draw the predictions into image files
with the config's own visualizer (mmdet's ``DetLocalVisualizer``, mmseg's
``SegLocalVisualizer``)."""
import os.path as osp


def enable_show_dir(cfg, show_dir: str, interval: int = 1) -> None:
    """Turn on ``default_hooks.visualization`` so that every ``interval``-th
    test image is drawn with its predictions into ``show_dir``.

    mmdet's ``DetVisualizationHook`` writes ``show_dir/<image name>``;
    mmseg's ``SegVisualizationHook`` draws through the visualizer's
    backends, so its ``LocalVisBackend`` writes
    ``show_dir/vis_data/vis_image/test_<image name>_<step>.png``
    (the layouts mmdet's and mmseg's own ``tools/test.py --show-dir`` give).

    Raises:
        KeyError: the config has no ``default_hooks.visualization``.
    """
    if interval < 1:
        raise ValueError(f'--show-interval must be >= 1, got {interval}')
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('visualization')
    if hook is None:
        raise KeyError(
            '--show-dir needs default_hooks.visualization in the config '
            "(mmdet: dict(type='DetVisualizationHook'), mmseg: "
            "dict(type='SegVisualizationHook'))")
    show_dir = osp.abspath(show_dir)
    hook['draw'] = True
    hook['interval'] = interval
    if 'Det' in str(hook.get('type')):
        hook['test_out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir
    # mmengine returns an existing visualizer of the same name (an earlier
    # run in this process) with its own save_dir, and the hook draws with
    # the latest one created, which may be another kind: a name of its own
    # makes this run's visualizer new and the one the hook draws with
    cfg.visualizer['name'] = f'show_dir:{show_dir}'
