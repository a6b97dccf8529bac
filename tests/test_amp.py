"""``tools/train.py --amp`` on the toy BCN+WS model: it asks mmengine for
AmpOptimWrapper with a dynamic loss scale. mmengine offers automatic
mixed precision on accelerators only: on a machine without CUDA the tool
refuses ``--amp`` before it builds anything, saying why; with CUDA it
trains with a loss scaler that the checkpoint keeps."""

import pytest
import torch

from mmbcn.engine import load_weights_only
from tool_runner import load_tool
from toy_run import toy_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')


def test_amp_asks_for_the_amp_optimizer_wrapper(tmp_path):
    train = load_tool('train')
    cfg = toy_config(tmp_path)
    amp = train.build_config(train.parse_args([cfg, '--amp']))
    assert amp.optim_wrapper.type == 'AmpOptimWrapper'
    assert amp.optim_wrapper.loss_scale == 'dynamic'
    assert amp.optim_wrapper.optimizer.type == 'SGD'
    plain = train.build_config(train.parse_args([cfg]))
    assert plain.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available')
def test_amp_without_cuda_is_refused_before_training(tmp_path):
    cfg = toy_config(tmp_path)
    work = tmp_path / 'work'
    with pytest.raises(RuntimeError,
                       match=r'^--amp: mixed precision training .*needs a '
                       'CUDA device, and none is available'):
        load_tool('train').main([cfg, '--work-dir', str(work), '--amp'])
    assert not list(tmp_path.glob('**/*.pth'))
    assert not work.exists()  # refused before the Runner was built


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_amp_trains_with_a_loss_scaler_on_cuda(tmp_path):
    from mmengine.optim import AmpOptimWrapper
    cfg = toy_config(tmp_path)
    work = tmp_path / 'work'
    runner = load_tool('train').main([cfg, '--work-dir', str(work), '--amp'])
    assert isinstance(runner.optim_wrapper, AmpOptimWrapper)
    checkpoint = load_weights_only(str(work / 'iter_4.pth'))
    assert 'loss_scaler' in checkpoint['optimizer']
    state = checkpoint['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
