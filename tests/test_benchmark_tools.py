"""Smoke runs of tools/benchmark (tiny shapes, one round): they run, write
JSON and markdown, and their measuring helpers count what they should.
No timing is asserted."""
import json

import pytest
import torch

from bcn_reference import randomize, reference_large_batch
from mmbcn.ops import BatchChannelNorm
from tool_runner import load_tool

pytestmark = pytest.mark.slow


def load(name):
    return load_tool(f'benchmark/{name}')


def test_layer_speed_smoke(tmp_path):
    tool = load('layer_speed')
    data = tool.main(['--batch', '2', '--stages', '4', '--image-size', '256',
                      '--repeat', '1', '--min-time', '0',
                      '--out-dir', str(tmp_path)])
    variants = tool.default_variants(torch.device('cpu'))
    assert {'BCN-py', 'BCN-est-py', 'BCN-cpu'} <= set(variants)
    assert (tmp_path / 'layer_speed.md').read_text().count('| 2x2048x8x8 |') \
        == len(variants)
    saved = json.loads((tmp_path / 'layer_speed.json').read_text())
    assert saved['environment']['threads'] == torch.get_num_threads()
    assert saved['environment']['copy_gb_s']['float32'] > 0
    rows = {r['variant']: r for r in saved['results']}
    assert set(rows) == set(variants)
    assert rows['GN']['fwd_bwd_ratio'] == 1.0
    for row in rows.values():
        assert row['fwd_bwd_ms'] > 0 and row['saved_mib'] > 0
        assert row['peak_mib'] > 0  # measured in a child process (Linux)
    # memory is deterministic: the composition keeps BN's output and the
    # group step's normalized tensor besides the input, BCN the input only
    assert rows['composed']['saved_ratio'] > 2.5
    assert rows['composed']['peak_ratio'] > 2
    assert rows['BCN']['saved_ratio'] < 1.3
    assert 0 < rows['BCN']['fwd_bwd_of_copy'] and rows['BCN']['fwd_bwd_gb_s']
    assert {'BCN float32 fwd+bwd / GN, worst shape',
            'BCN-est float32 fwd+bwd / GN, median shape'} <= set(
                data['summary'])


def test_layer_speed_compile_rows(tmp_path):
    """``--compile``: GN, BCN and BCN-est under torch.compile beside the
    eager layers, and compiled BCN against compiled GN in the summary."""
    tool = load('layer_speed')
    data = tool.main(['--batch', '1', '--stages', '4', '--image-size', '64',
                      '--repeat', '1', '--min-time', '0', '--no-memory',
                      '--variants', 'GN', '--compile',
                      '--out-dir', str(tmp_path)])
    rows = {r['variant'] for r in data['results']}
    assert rows == {'GN', 'GN+compile', 'BCN+compile', 'BCN-est+compile'}
    assert {'BCN+compile float32 fwd+bwd / GN+compile, worst shape',
            'BCN-est+compile float32 fwd+bwd / GN+compile, median shape'
            } <= set(data['summary'])


@pytest.mark.parametrize('estimate', [False, True])
def test_composed_baseline_is_bcn(estimate):
    """The benchmark's composition (Eq. 16) computes BCN (so the
    comparison is between two ways of computing the same thing)."""
    tool = load('layer_speed')
    composed = tool.ComposedBCN(8, 4, estimate=estimate,
                                update_rate=0.5).double()
    ours = BatchChannelNorm(8, 4, estimate=estimate,
                            update_rate=0.5 if estimate else None).double()
    randomize(ours)
    with torch.no_grad():
        composed.bn.weight.copy_(ours.batch_weight)
        composed.bn.bias.copy_(ours.batch_bias)
        composed.weight.copy_(ours.weight.view(1, -1, 1))
        composed.bias.copy_(ours.bias.view(1, -1, 1))
        composed.bn.running_mean.copy_(ours.running_mean)
        composed.bn.running_var.copy_(ours.running_var)
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(composed(x), ours(x))
    if not estimate:
        torch.testing.assert_close(composed(x),
                                   reference_large_batch(x, ours))


def test_saved_bytes_counts_each_storage_once():
    tool = load('layer_speed')
    x = torch.randn(1000, requires_grad=True)
    with tool.saved_bytes_counter() as saved:
        y = x * x  # saves x twice (both operands): one storage
    assert saved['bytes'] == 4000
    y.sum().backward()


TINY_DETECTOR = [
    'model.neck.out_channels=32', 'model.rpn_head.in_channels=32',
    'model.rpn_head.feat_channels=32',
    'model.roi_head.bbox_roi_extractor.out_channels=32',
    'model.roi_head.bbox_head.in_channels=32',
    'model.roi_head.bbox_head.conv_out_channels=32',
    'model.roi_head.bbox_head.fc_out_channels=64',
    'model.roi_head.mask_roi_extractor.out_channels=32',
    'model.roi_head.mask_head.in_channels=32',
    'model.roi_head.mask_head.conv_out_channels=32',
    'model.train_cfg.rpn_proposal.max_per_img=32',
    'model.train_cfg.rcnn.sampler.num=16',
    'model.test_cfg.rpn.nms_pre=32', 'model.test_cfg.rpn.max_per_img=16'
]


def test_detection_step_smoke(tmp_path):
    tool = load('detection_step')
    data = tool.main(['--depth', '18', '--img-size', '64', '64',
                      '--repeat', '1', '--warmup', '0', '--no-memory',
                      '--out-dir', str(tmp_path), '--cfg-options'] +
                     TINY_DETECTOR)
    results = json.loads((tmp_path / 'detection_step.json').read_text())
    assert results['results']['fold_report']['unfoldable'] == []
    assert data['results']['folded_feature_rel_error'] < 1e-4
    assert set(results['results']['infer_s']) == {
        'BCN+WS', 'GN+WS', 'GN', 'BCN+WS folded'}
    assert 'BCN+WS folded / GN' in results['results']['infer_ratio']
    table = (tmp_path / 'detection_step.md').read_text()
    assert 'training iteration' in table and '<= 1.02' in table


def test_detection_configs_differ_only_in_norm_and_conv():
    tool = load('detection_step')
    args = tool.parse_args(['--depth', '18'])
    configs, scope = tool.model_configs(args)
    assert scope == 'mmdet'
    bcn, gn_ws, gn = configs['BCN+WS'], configs['GN+WS'], configs['GN']
    assert bcn.backbone.norm_cfg.type == 'BCN'
    assert bcn.backbone.norm_cfg.estimate
    assert gn_ws.backbone.norm_cfg.type == 'GN'
    assert gn_ws.roi_head.mask_head.norm_cfg.type == 'GN'
    assert gn_ws.neck.conv_cfg.type == 'WSConv'
    assert gn.neck.conv_cfg is None and gn.backbone.conv_cfg is None
    assert gn.backbone.depth == 18 and gn.backbone.init_cfg is None


def current_scope():
    from mmengine.registry import DefaultScope
    scope = DefaultScope.get_current_instance()
    return None if scope is None else scope.scope_name


def test_segmentation_step_smoke(tmp_path):
    tool = load('segmentation_step')
    scope = current_scope()
    data = tool.main(['--depth', '18', '--size', '33', '--iters', '1',
                      '--warmup', '0', '--no-memory', '--out-dir',
                      str(tmp_path)])
    assert current_scope() == scope  # built in mmseg's scope, not set
    saved = json.loads((tmp_path / 'segmentation_step.json').read_text())
    assert saved == json.loads(json.dumps(data))
    results = saved['results']
    assert set(results['step_s']) == {'BCN+WS', 'GN+WS'}
    assert all(len(v) == 1 and v[0] > 0 for v in results['times'].values())
    assert results['time_ratio'] > 0 and results['peak_ratio'] is None
    assert saved['environment']['threads'] == torch.get_num_threads()
    table = (tmp_path / 'segmentation_step.md').read_text()
    assert '| BCN+WS |' in table and '| BCN+WS / GN+WS |' in table
