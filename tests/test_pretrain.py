"""Pretraining backbones on the bundled shapes classification set and
fine-tuning detectors from them: the data, the classifier and its metric,
the pretraining configs trained by tools/train.py, the BCN statistics of
pretraining becoming Algorithm 1's starting estimates in the micro-batch
detector, and the cache of tools/demo.py --pretrained."""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmbcn.demo import pretrain as pre
from mmbcn.ops import BatchChannelNorm
from mmbcn.utils import scoped_build
from tool_runner import REPO, load_tool, run

PRETRAIN = {
    'bcn': osp.join(REPO, 'configs/pretrain/resnet18_bcn-ws_1xb32_'
                    'shapes-cls.py'),
    'gn': osp.join(REPO, 'configs/pretrain/resnet18_gn-ws_1xb32_'
                   'shapes-cls.py'),
    'bn': osp.join(REPO, 'configs/pretrain/resnet18_bn_1xb32_shapes-cls.py'),
}
DETECTOR = {
    'bcn': osp.join(REPO, 'configs/mask_rcnn/mask-rcnn_r18_fpn_bcn-ws-all_'
                    'pretrained_demo.py'),
    'gn': osp.join(REPO, 'configs/mask_rcnn/mask-rcnn_r18_fpn_gn-ws-all_'
                   'pretrained_demo.py'),
}
SIZES = dict(train=40, val=14)


@pytest.fixture(scope='module')
def cls_root(tmp_path_factory):
    """A small shapes classification set (40 training, 14 validation
    images)."""
    from mmbcn.datasets.shapes_cls import generate_shapes_cls
    root = tmp_path_factory.mktemp('shapes_cls')
    generate_shapes_cls(str(root), sizes=SIZES)
    return str(root)


def data_options(root):
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]


def build(path, root=None):
    """(config, model) of a config, its data under ``root``."""
    cfg = Config.fromfile(path)
    if root is not None:
        cfg.merge_from_dict(
            dict(o.split('=', 1) for o in data_options(root)))
    return cfg, scoped_build(cfg.model, cfg.default_scope)


def batches(cfg, count, batch_size=8):
    """``count`` training batches of real samples (pipeline applied)."""
    dataset = scoped_build(cfg.train_dataloader.dataset, cfg.default_scope,
                           _datasets())
    order = np.random.default_rng(0).permutation(len(dataset))
    return [
        pseudo_collate([dataset[int(i)] for i in chunk])
        for chunk in np.array_split(order[:count * batch_size], count)
    ]


def _datasets():
    from mmengine.registry import DATASETS
    return DATASETS


# ---------------------------------------------------------------- data
def test_classification_set_is_deterministic_and_balanced():
    from mmbcn.datasets.shapes_cls import CLASSES, generate_split
    images, labels = generate_split(15, seed=3)
    again, same = generate_split(15, seed=3)
    assert images.shape == (15, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, same)
    assert len(CLASSES) == 7 and CLASSES[-1] == 'square+circle+triangle'
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(images[0], images[1])


def test_dataset_refuses_data_of_another_version(cls_root, tmp_path):
    from mmbcn.datasets.shapes_cls import ShapesClsDataset
    dataset = ShapesClsDataset(data_root=cls_root, ann_file='val.npz')
    assert len(dataset) == SIZES['val']
    sample = dataset.get_data_info(0)
    assert sample['img'].shape == (64, 64, 3) and 0 <= sample['gt_label'] < 7
    old = tmp_path / 'old'
    old.mkdir()
    for name in ('train.npz', 'val.npz'):
        with open(osp.join(cls_root, name), 'rb') as f:
            (old / name).write_bytes(f.read())
    meta = json.loads(open(osp.join(cls_root, 'meta.json')).read())
    (old / 'meta.json').write_text(json.dumps(dict(meta, version=0)))
    with pytest.raises(RuntimeError, match='version 0.*Delete the data_root'):
        ShapesClsDataset(data_root=str(old), ann_file='val.npz')


# ---------------------------------------------------------- classifier
def test_classifier_trains_and_scores_top1(cls_root):
    from mmbcn.models.classifiers import Top1Accuracy
    cfg, model = build(PRETRAIN['bcn'], cls_root)
    [batch] = batches(cfg, 1)
    assert batch['inputs'][0].shape == (3, 64, 64)
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert set(losses) == {'loss_cls', 'top1'}
    assert torch.isfinite(losses['loss_cls']) and losses['loss_cls'] > 0
    model.eval()
    with torch.no_grad():
        preds = model.val_step(batch)
    assert len(preds) == 8
    assert all(0 <= p['pred_label'] < 7 and p['score'].shape == (7, )
               for p in preds)
    metric = Top1Accuracy()
    metric.process(batch, preds)
    top1 = metric.compute_metrics(metric.results)['top1']
    right = sum(p['pred_label'] == p['gt_label'] for p in preds)
    assert top1 == pytest.approx(100.0 * right / 8)


# ------------------------------------- from pretraining to micro-batch
def _pretrained_classifier(kind, root, tmp_path):
    """A pretraining classifier whose statistics moved on real batches in
    large-batch training mode, saved as a checkpoint; (model, path)."""
    cfg, model = build(PRETRAIN[kind], root)
    model.train()
    with torch.no_grad():
        for batch in batches(cfg, 3):
            model(**model.data_preprocessor(batch, True), mode='tensor')
    path = str(tmp_path / f'{kind}.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return model, path


def _detector(kind, checkpoint):
    cfg = Config.fromfile(DETECTOR[kind])
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    detector = scoped_build(cfg.model, cfg.default_scope)
    detector.init_weights()
    return detector


def test_pretrained_statistics_become_the_starting_estimates(
        cls_root, tmp_path):
    classifier, path = _pretrained_classifier('bcn', cls_root, tmp_path)
    pretrained = classifier.backbone.state_dict()
    detector = _detector('bcn', path)
    # every backbone weight and statistic is the pretrained one
    loaded = detector.backbone.state_dict()
    assert loaded.keys() == pretrained.keys()
    for key, value in pretrained.items():
        assert torch.equal(loaded[key], value), key
    layers = [(n, m) for n, m in detector.backbone.named_modules()
              if isinstance(m, BatchChannelNorm)]
    assert len(layers) == 20
    for name, layer in layers:
        assert layer.estimate and layer.training, name
        # Algorithm 1 starts from the statistics kept in pretraining
        assert torch.equal(layer.running_mean,
                           pretrained[f'{name}.running_mean']), name
        assert torch.equal(layer.running_var,
                           pretrained[f'{name}.running_var']), name
    moved = [n for n, m in layers if not torch.equal(
        m.running_mean, torch.zeros_like(m.running_mean))]
    assert len(moved) == len(layers)
    # the neck and heads were not pretrained: Algorithm 1's (0, 1)
    rest = [(n, m) for n, m in detector.named_modules()
            if isinstance(m, BatchChannelNorm)
            and not n.startswith('backbone.')]
    assert rest and all(m.estimate for _, m in rest)
    for name, layer in rest:
        assert torch.equal(layer.running_mean,
                           torch.zeros_like(layer.running_mean)), name
        assert torch.equal(layer.running_var,
                           torch.ones_like(layer.running_var)), name


def test_gn_ws_detector_loads_its_pretrained_backbone(cls_root, tmp_path):
    classifier, path = _pretrained_classifier('gn', cls_root, tmp_path)
    pretrained = classifier.backbone.state_dict()
    loaded = _detector('gn', path).backbone.state_dict()
    assert loaded.keys() == pretrained.keys()
    for key, value in pretrained.items():
        assert torch.equal(loaded[key], value), key


def test_missing_pretrained_backbone_names_the_config_that_writes_it(
        monkeypatch):
    from mmbcn.engine.runner_support import check_checkpoint_paths
    monkeypatch.chdir(REPO)
    cfg = Config.fromfile(DETECTOR['bcn'])
    cfg.model.backbone.init_cfg.checkpoint = (
        'work_dirs/resnet18_bcn-ws_1xb32_shapes-cls/iter_9999.pth')
    with pytest.raises(FileNotFoundError) as error:
        check_checkpoint_paths(cfg)
    message = str(error.value)
    assert 'model.backbone.init_cfg.checkpoint' in message
    assert ('tools/train.py configs/pretrain/resnet18_bcn-ws_1xb32_'
            'shapes-cls.py') in message
    assert 'official_bcn' not in message


# ----------------------------------------------------------------- cache
def test_changed_pretraining_is_not_reused(cls_root, tmp_path):
    from mmbcn.datasets.shapes_cls import generate_shapes_cls

    def key(seed=0, iters=2, options=(), root=cls_root):
        cfg = pre.pretrain_config(PRETRAIN['bcn'], seed, iters,
                                  list(options) + data_options(root))
        return cfg, pre.cache_key(cfg)

    cfg, (digest, material) = key()
    assert cfg.train_cfg.max_iters == 2 and cfg.randomness.seed == 0
    assert cfg.param_scheduler[-1]['end'] == 2
    # a complete cache entry for this key, as the demo leaves it
    entry = pre.entry_dir(str(tmp_path / 'cache'), PRETRAIN['bcn'], digest)
    _, model = build(PRETRAIN['bcn'], cls_root)
    os.makedirs(entry)
    torch.save(dict(state_dict=model.state_dict()),
               osp.join(entry, pre.CHECKPOINT))
    with open(osp.join(entry, pre.KEY), 'w') as f:
        json.dump(dict(digest=digest, material=material), f)
    assert pre.cached(entry, digest, material) is not None
    assert key()[1][0] == digest  # the same config, seed and data
    other_data = str(tmp_path / 'other')
    generate_shapes_cls(other_data, sizes=dict(train=40, val=7))
    for changed in (dict(seed=1), dict(iters=3),
                    dict(options=['optim_wrapper.optimizer.lr=0.05']),
                    dict(options=['model.backbone.norm_cfg.num_groups=16']),
                    dict(root=other_data)):
        _, (other, other_material) = key(**changed)
        assert other != digest, changed
        assert pre.cached(entry, other, other_material) is None, changed
        assert pre.entry_dir('c', PRETRAIN['bcn'], other) != pre.entry_dir(
            'c', PRETRAIN['bcn'], digest)
    # an entry whose key file does not match what it claims is not used
    with open(osp.join(entry, pre.KEY), 'w') as f:
        json.dump(dict(digest=digest, material=dict(material, data={})), f)
    assert pre.cached(entry, digest, material) is None


# ------------------------------------------------------ end to end (slow)
@pytest.mark.slow
@pytest.mark.usefixtures('restore_default_scope')
@pytest.mark.parametrize('kind', ['bcn', 'gn', 'bn'])
def test_pretraining_config_trains_and_writes_a_loadable_backbone(
        kind, cls_root, tmp_path):
    work = tmp_path / 'work'
    runner = load_tool('train').main([
        PRETRAIN[kind], '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=2',
        'default_hooks.checkpoint.interval=2'
    ] + data_options(cls_root))
    assert runner.iter == 2
    assert 'val/accuracy/top1' in runner.message_hub.log_scalars
    checkpoint = str(work / 'iter_2.pth')
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    assert {k.split('.')[0] for k in state} == {'backbone', 'head'}
    if kind == 'bn':
        return
    detector = _detector(kind, checkpoint)
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, state[f'backbone.{key}']), key


@pytest.mark.slow
def test_mmdet_train_tool_trains_the_pretraining_config(cls_root, tmp_path):
    import mmdet
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    work = tmp_path / 'work'
    run([
        sys.executable, tool, PRETRAIN['bcn'], '--work-dir',
        str(work), '--cfg-options', 'train_cfg.max_iters=2',
        'default_hooks.checkpoint.interval=2'
    ] + data_options(cls_root))
    state = torch.load(str(work / 'iter_2.pth'),
                       weights_only=True)['state_dict']
    assert any(k.startswith('backbone.layer4.') for k in state)


def _args(tmp_path, cls_root, options=(), seed=0):
    return argparse.Namespace(
        seed=seed, pretrain_seed=0, pretrain_iters=1, threads=None,
        pretrain_cfg_options=data_options(cls_root) + list(options),
        pretrain_cache=str(tmp_path / 'cache'),
        work_dir=str(tmp_path / 'work'))


@pytest.mark.slow
def test_demo_pretrained_cache_reuses_and_retrains(cls_root, tmp_path,
                                                   capsys):
    first = pre.pretrained_detectors(_args(tmp_path, cls_root), ['bcn'])
    info = json.loads((tmp_path / 'work' / 'pretrained.json').read_text())
    assert not info['bcn']['reused'] and info['bcn']['iterations'] == 1
    checkpoint = info['bcn']['checkpoint']
    assert torch.load(checkpoint, weights_only=True)['state_dict']
    assert f'checkpoint={checkpoint!r}' in open(first['bcn'][1]).read()
    again = pre.pretrained_detectors(  # another fine-tuning seed
        _args(tmp_path, cls_root, seed=3), ['bcn'])
    assert again == first
    info = json.loads((tmp_path / 'work' / 'pretrained.json').read_text())
    assert info['bcn']['reused'] and info['bcn']['checkpoint'] == checkpoint
    assert 'reusing the pretrained backbone' in capsys.readouterr().out
    pre.pretrained_detectors(
        _args(tmp_path, cls_root, ['optim_wrapper.optimizer.lr=0.05']),
        ['bcn'])
    info = json.loads((tmp_path / 'work' / 'pretrained.json').read_text())
    assert not info['bcn']['reused']
    assert info['bcn']['checkpoint'] != checkpoint
    assert osp.isfile(checkpoint)  # the other key's entry is kept


@pytest.mark.slow
def test_demo_pretrained_writes_both_rows_and_pictures(cls_root, tmp_path):
    from mmbcn.datasets import generate_shapes_coco
    coco = tmp_path / 'shapes'
    generate_shapes_coco(str(coco), sizes=dict(train=8, val=3))
    work = tmp_path / 'work'
    detection = [
        f'{k}.dataset.data_root={coco}/'
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ] + [f'val_evaluator.ann_file={coco}/annotations/instances_val.json']
    proc = run([
        sys.executable,
        osp.join(REPO, 'tools', 'demo.py'), '--pretrained', '--max-iters',
        '2', '--pretrain-iters', '2', '--img-size', '96', '--work-dir',
        str(work), '--pretrain-cache',
        str(tmp_path / 'cache'), '--pretrain-cfg-options'
    ] + data_options(cls_root) + ['--cfg-options'] + detection)
    rows = json.loads((work / 'results.json').read_text())['runs']
    assert [r['name'] for r in rows] == ['BCN+WS', 'GN+WS']
    for row in rows:
        assert row['iterations'] == 2 and 0 <= row['coco/bbox_mAP'] <= 1
    assert '| BCN+WS |' in proc.stdout and '| GN+WS |' in proc.stdout
    assert 'pretrained BCN+WS backbone: top-1' in proc.stdout
    for name in ('curves.png', 'predictions.png'):
        assert (work / name).stat().st_size > 1000
    info = json.loads((work / 'pretrained.json').read_text())
    for run_name in ('bcn', 'gn'):
        checkpoint = info[run_name]['checkpoint']
        assert osp.isfile(checkpoint) and not info[run_name]['reused']
        assert info[run_name]['iterations'] == 2
        # the detector's backbone was initialized from it
        log = (work / run_name / 'train.log').read_text()
        assert f'load backbone. in model from: {checkpoint}' in log
