"""No user file is lost: tools/test.py never writes its predictions over
its checkpoint or config, the fold tool never replaces a file that no
argument named, two training runs never share a work directory, the
clean-up of a killed save never removes a file a live run is writing, and
--resume never continues from (or deletes for) another folder's
checkpoints."""
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch
from mmengine.config import Config

import mmbcn  # noqa: F401
from mmbcn.engine import find_resume_checkpoint
from mmbcn.engine.runner_support import WorkDirBusyError, work_dir_lock
from mmbcn.utils import (OutputPathError, atomic_outputs,
                         remove_stale_temporaries, scoped_build)
from mmbcn_toy import STARTS
from tool_runner import REPO, load_tool, tool_env
from toy_run import toy_config


def snapshot(folder):
    return {name: open(osp.join(folder, name), 'rb').read()
            for name in sorted(os.listdir(folder))
            if osp.isfile(osp.join(folder, name))}


@pytest.fixture
def toy_model(tmp_path):
    """(config, checkpoint named m.pkl, as mmengine may name one) of the
    toy BCN+WS model, in their own folder."""
    folder = tmp_path / 'model'
    folder.mkdir()
    config = toy_config(folder, name='bcn.py')
    model = scoped_build(Config.fromfile(config).model, 'mmengine')
    checkpoint = str(folder / 'm.pkl')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return config, checkpoint


# ------------------------------------------------------ tools/test.py --out
@pytest.mark.parametrize('target', ['checkpoint', 'link to checkpoint',
                                    'config'])
def test_test_out_never_replaces_an_input(toy_model, tmp_path, target):
    config, checkpoint = toy_model
    folder = osp.dirname(config)
    out = {'checkpoint': checkpoint, 'config': config}.get(target)
    if target == 'link to checkpoint':
        out = str(tmp_path / 'link.pkl')
        os.symlink(checkpoint, out)
    if target == 'config':  # a .pkl name is required: link to the config
        out = str(tmp_path / 'config.pkl')
        os.link(config, out)
    before = snapshot(folder)
    with pytest.raises(OutputPathError, match=r'--out .* is the '
                       r'(CHECKPOINT|CONFIG) .*choose another output path'):
        load_tool('test').main([config, checkpoint, '--out', out,
                                '--work-dir', str(tmp_path / 'work')])
    assert snapshot(folder) == before
    assert not (tmp_path / 'work').exists()


def test_test_out_that_is_a_folder_is_refused(toy_model, tmp_path):
    config, checkpoint = toy_model
    folder = tmp_path / 'preds.pkl'
    folder.mkdir()
    with pytest.raises(OutputPathError, match='is a folder'):
        load_tool('test').main([config, checkpoint, '--out', str(folder)])


# -------------------------------------------------------- fold's outputs
def fold(*args):
    return load_tool('deploy/fold_bcn').main(
        [str(a) for a in args] + ['--verify-shape', '2', '3', '8', '8'])


def test_fold_never_replaces_a_config_no_argument_named(toy_model,
                                                        tmp_path):
    config, checkpoint = toy_model
    out_dir = tmp_path / 'deploy'
    out_dir.mkdir()
    mine = out_dir / 'model.py'
    mine.write_text('# my own config\n')
    with pytest.raises(OutputPathError, match=r"model.py' \(OUT with .py\), "
                       'which exists.*--out-config'):
        fold(config, checkpoint, out_dir / 'model.pth')
    assert snapshot(out_dir) == {'model.py': b'# my own config\n'}


@pytest.mark.parametrize('which', ['OUT', 'the folded config'])
def test_fold_output_that_is_a_folder_is_refused_up_front(
        toy_model, tmp_path, which):
    config, checkpoint = toy_model
    (tmp_path / 'out.pth').mkdir() if which == 'OUT' else \
        (tmp_path / 'out.py').mkdir()
    with pytest.raises(OutputPathError, match=f'{which} .* is a folder'):
        fold(config, checkpoint, tmp_path / 'out.pth')


@pytest.mark.slow
def test_fold_again_replaces_its_own_config_or_the_named_one(
        toy_model, tmp_path):
    config, checkpoint = toy_model
    out = tmp_path / 'model.pth'
    assert fold(config, checkpoint, out) == 0
    assert fold(config, checkpoint, out) == 0  # its own earlier config
    named = tmp_path / 'named.py'
    named.write_text('# replaced on purpose\n')
    assert fold(config, checkpoint, tmp_path / 'other.pth', '--out-config',
                named) == 0
    assert 'load_from' in named.read_text()


# -------------------------------------------------- one run per work dir
def test_second_training_run_in_a_live_work_dir_stops(tmp_path):
    cfg = toy_config(tmp_path)
    work = tmp_path / 'work'
    with work_dir_lock(str(work)):
        before = sorted(os.listdir(work))
        with pytest.raises(WorkDirBusyError) as err:
            load_tool('train').main([cfg, '--work-dir', str(work)])
        assert sorted(os.listdir(work)) == before  # nothing written
    message = str(err.value)
    assert str(work) in message and '--work-dir' in message
    assert f'process {os.getpid()}' in message


HOLD = '''
import sys
from mmbcn.engine.runner_support import work_dir_lock
with work_dir_lock(sys.argv[1]):
    print('holding', flush=True)
    sys.stdin.read()
'''


@pytest.mark.slow
def test_work_dir_held_by_another_process_then_free(tmp_path):
    """Another live process holds the work directory: the run stops,
    naming it; once that process has exited (its lock goes with it), the
    run trains."""
    cfg = toy_config(tmp_path, max_iters=2)
    work = str(tmp_path / 'work')
    holder = subprocess.Popen([sys.executable, '-c', HOLD, work], cwd=REPO,
                              env=tool_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'holding'
        with pytest.raises(WorkDirBusyError,
                           match=f'process {holder.pid} on'):
            load_tool('train').main([cfg, '--work-dir', work])
    finally:
        holder.communicate('', timeout=120)
    runner = load_tool('train').main([cfg, '--work-dir', work])
    assert runner.iter == 2 and osp.isfile(osp.join(work, 'iter_2.pth'))


# ------------------------------------------- temporary files of saves
TEMPORARY = r'\..+\.pth\.[^.]+\.part\.pth'


def test_stale_temporaries_go_live_ones_stay(tmp_path):
    stale = tmp_path / '.iter_4.pth.k1ll3d.part.pth'
    stale.write_bytes(b'half a checkpoint')
    (tmp_path / 'iter_2.pth').write_bytes(b'a checkpoint')
    with atomic_outputs(str(tmp_path / 'iter_6.pth')) as (live, ):
        with open(live, 'wb') as f:
            f.write(b'being written')
        removed = remove_stale_temporaries(str(tmp_path), TEMPORARY)
        assert removed == [str(stale)]
        assert osp.isfile(live)
    assert sorted(os.listdir(tmp_path)) == ['iter_2.pth', 'iter_6.pth']
    assert (tmp_path / 'iter_6.pth').read_bytes() == b'being written'


@pytest.mark.slow
def test_training_start_keeps_a_save_another_run_is_writing(tmp_path):
    """A run starting in a folder where another process is saving (its
    temporary checkpoint locked) removes only what a killed save left."""
    cfg = toy_config(tmp_path, max_iters=2)
    work = tmp_path / 'work'
    work.mkdir()
    stale = work / '.iter_8.pth.k1ll3d.part.pth'
    stale.write_bytes(b'left by a killed save')
    with atomic_outputs(str(work / 'iter_9.pth')) as (live, ):
        with open(live, 'wb') as f:
            f.write(b'another run is saving')
        load_tool('train').main([cfg, '--work-dir', str(work)])
        assert osp.isfile(live) and not stale.exists()
    assert (work / 'iter_9.pth').read_bytes() == b'another run is saving'
    assert osp.isfile(work / 'iter_2.pth')


# --------------------------------------------------------------- resume
def save_iter(folder, it):
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'iter_{it}.pth')
    torch.save({'meta': {'iter': it}, 'state_dict': {}}, path)
    return path


def test_resume_ignores_a_record_that_points_outside_the_work_dir(tmp_path):
    work, other = str(tmp_path / 'work'), str(tmp_path / 'other')
    own = save_iter(work, 2)
    save_iter(other, 5)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(other, 'iter_9.pth'))  # gone
    with pytest.warns(UserWarning, match=r'not in the work directory.*'
                      r'--resume .*iter_9.pth'):
        assert find_resume_checkpoint(work) == own
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(other, 'iter_5.pth'))  # exists, still foreign
    with pytest.warns(UserWarning, match='not in the work directory'):
        assert find_resume_checkpoint(work) == own


def test_resume_with_only_a_foreign_record_starts_afresh(tmp_path):
    """Nothing of the work directory's own to resume from: the run starts
    from iteration 0 instead of following last_checkpoint elsewhere."""
    cfg = toy_config(tmp_path)
    work, other = str(tmp_path / 'work'), str(tmp_path / 'other')
    os.makedirs(work)
    foreign = save_iter(other, 5)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(foreign)
    train = load_tool('train')
    with pytest.warns(UserWarning, match='not in the work directory'):
        built = train.build_config(
            train.parse_args([cfg, '--work-dir', work, '--resume']))
    assert not built.resume and built.load_from is None


def test_resume_follows_the_checkpoint_hooks_out_dir(tmp_path):
    """Checkpoints saved under the hook's ``out_dir`` are the run's own."""
    cfg = toy_config(tmp_path)
    work, out_dir = str(tmp_path / 'work'), str(tmp_path / 'store')
    os.makedirs(work)
    saved = save_iter(osp.join(out_dir, 'work'), 3)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(saved)
    train = load_tool('train')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        built = train.build_config(train.parse_args([
            cfg, '--work-dir', work, '--resume', '--cfg-options',
            f'default_hooks.checkpoint.out_dir={out_dir}'
        ]))
    assert built.resume and built.load_from == saved


@pytest.mark.slow
def test_resume_keeps_to_the_work_dir_and_its_checkpoints(tmp_path):
    cfg = toy_config(tmp_path, max_keep_ckpts=2,
                     hooks=[dict(type='RecordStartHook')])
    work, other = str(tmp_path / 'work'), str(tmp_path / 'other')
    train = load_tool('train')
    train.main([cfg, '--work-dir', other, '--cfg-options',
                'train_cfg.max_iters=6'])
    train.main([cfg, '--work-dir', work, '--cfg-options',
                'train_cfg.max_iters=2'])
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(other, 'iter_9.pth'))
    foreign = snapshot(other)
    del STARTS[:]
    with pytest.warns(UserWarning, match='not in the work directory'):
        runner = train.main([cfg, '--work-dir', work, '--resume'])
    assert STARTS == [2] and runner.iter == 4
    assert snapshot(other) == foreign
    assert {'iter_2.pth', 'iter_4.pth'} <= set(os.listdir(work))
