"""tools/train.py --tensorboard
(mmbcn.engine.runner_support.add_tensorboard)."""
from mmengine.config import Config
from mmengine.registry import VISUALIZERS

from mmbcn.engine.runner_support import add_tensorboard


def test_backend_kept_when_a_visualizer_of_that_name_exists(tmp_path):
    """mmdet's and mmseg's runtimes name every visualizer 'visualizer' and
    mmengine returns an existing instance of that name: a second run in
    one process must still get its TensorBoard backend (built as the
    Runner builds it: name and save_dir by default)."""
    VISUALIZERS.build(dict(type='Visualizer', name='visualizer',
                           save_dir=str(tmp_path / 'first')))
    cfg = Config(dict(visualizer=dict(
        type='Visualizer', name='visualizer',
        vis_backends=[dict(type='LocalVisBackend')])))
    add_tensorboard(cfg)
    add_tensorboard(cfg)  # kept once
    visualizer = dict(cfg.visualizer)
    visualizer.setdefault('name', 'second_run')
    visualizer.setdefault('save_dir', str(tmp_path / 'second'))
    built = VISUALIZERS.build(visualizer)
    assert [type(b).__name__ for b in built._vis_backends.values()] == [
        'LocalVisBackend', 'TensorboardVisBackend']
