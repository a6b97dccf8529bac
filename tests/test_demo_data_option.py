"""tools/demo.py --data: the detection demo on the bundled shapes data (the
configs' own) or on its 'hard' variant, chosen by config options that every
run's config, the data preparation and the settings that rows of one table
share see; detection only."""
import os.path as osp

import pytest

from mmbcn.demo.pretrain import DETECTORS
from mmbcn.demo.run_config import merged_config, run_settings
from mmbcn.demo.tasks import DATA, TASKS
from tool_runner import REPO, load_tool

HARD = 'data/shapes_coco_hard/'
CONFIGS = [osp.join(REPO, config)
           for _, config in [*TASKS['detection']['runs'].values(),
                             *DETECTORS.values()]]
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def test_default_data_adds_no_option():
    demo = load_tool('demo')
    args = demo.parse_args(['--cfg-options', 'a=1'])
    assert args.data == 'shapes' and args.cfg_options == ['a=1']
    assert args.work_dir == 'work_dirs/demo'


def test_hard_data_options_come_before_the_users():
    demo = load_tool('demo')
    args = demo.parse_args(['--data', 'shapes-hard', '--pretrained',
                            '--cfg-options', 'a=1'])
    assert args.cfg_options == DATA['shapes-hard'] + ['a=1']
    assert args.work_dir == 'work_dirs/demo_pretrained_shapes-hard'


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_hard_data_reaches_every_loader_and_evaluator(config):
    """The demo's detection configs (from scratch and from the pretrained
    backbones) with ``--data shapes-hard``'s options: every loader reads
    the hard data root as the 'hard' variant, both evaluators its
    annotations; the settings that decide whether rows of one table may
    be merged differ from the default data's; a later --cfg-options still
    wins."""
    args = load_tool('demo').parse_args(['--data', 'shapes-hard'])
    easy, hard = merged_config(config), merged_config(config,
                                                      args.cfg_options)
    for loader in LOADERS:
        assert easy[loader].dataset.data_root == 'data/shapes_coco/'
        assert easy[loader].dataset.get('variant', 'easy') == 'easy'
        assert hard[loader].dataset.data_root == HARD
        assert hard[loader].dataset.variant == 'hard'
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert hard[evaluator].ann_file == (
            f'{HARD}annotations/instances_val.json')
    old, new = run_settings(easy), run_settings(hard)
    assert (old['train_data'], old['val_data']) == ('data/shapes_coco/', ) * 2
    assert (new['train_data'], new['val_data']) == (HARD, ) * 2
    mine = merged_config(config, args.cfg_options + [
        'train_dataloader.dataset.data_root=elsewhere/'])
    assert mine.train_dataloader.dataset.data_root == 'elsewhere/'


def test_hard_data_is_a_detection_option(capsys):
    demo = load_tool('demo')
    with pytest.raises(SystemExit):
        demo.parse_args(['--task', 'segmentation', '--data', 'shapes-hard'])
    err = capsys.readouterr().err
    assert '--data shapes-hard applies to --task detection' in err
    assert '--task segmentation' in err
    assert demo.parse_args(['--task', 'segmentation']).cfg_options == []
    with pytest.raises(SystemExit):
        demo.parse_args(['--data', 'coco'])
    assert "invalid choice: 'coco'" in capsys.readouterr().err
