"""Where the DeepLabV3 configs put their predictions.

The output-stride-16 network computes feature n around input pixel 16n
(checked on the demo backbone by flipping). Training pairs feature n with
the label of the pixel the training upsampling assigns to it, 16n + delta;
a network that has learnt exactly that predicts, at test time, the label
at 16n + delta in its input. Such a network (the oracle below, which
reads the labels from its input instead of the image) is run through
mmseg's own test path of each config: the data preprocessor's padding,
whole-image or sliding-window inference, the decode head's upsampling and
the segmentor's removal of the padding. Its predictions on the bundled
validation images must sit where the ground truth is: the best integer
shift between them is (0, 0).
"""
import functools
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.models.utils import resize
from mmseg.registry import DATASETS, MODELS

import mmbcn  # noqa: F401
from mmbcn.datasets.voc_demo import VOID, prepare_voc_shapes
from mmbcn.utils import scoped_build
from seg_shift import best_shift
from tool_runner import REPO

STRIDE = 16
HERE = osp.join(REPO, 'configs', 'deeplabv3')
DEMOS = [
    osp.join(HERE, f'deeplabv3_r18b-d16_{norm}_1xb4-1k_voc-shapes-'
             '128x128_demo.py') for norm in ('syncbcn-ws', 'gn-ws')
]
PAPER = [
    osp.join(HERE, f'deeplabv3_r101b-d16-mg111_{norm}4xb4-30k_voc12aug-'
             '513x513.py') for norm in ('', 'gn-ws_', 'syncbcn-ws_')
]


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'voc_shapes'
    prepare_voc_shapes(str(root))
    return str(root)


def build(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    model = scoped_build(cfg.model, cfg.default_scope, MODELS)
    model.init_weights()
    return cfg, model.eval()


def grid_sizes(model):
    """``side -> number of features`` of the model's real backbone."""

    @functools.lru_cache(maxsize=None)
    def size(side):
        with torch.no_grad():
            feats = model.backbone(torch.zeros(1, 3, side, STRIDE + 1))
        return feats[-1].shape[-2]

    return size


def training_offset(cfg, model) -> float:
    """delta: the training loss pairs feature n with the label of pixel
    16n + delta of the crop. Computed with mmseg's ``resize`` as the decode
    heads' losses call it; fails if delta is not one number for every
    feature and both heads (then no network can learn it everywhere)."""
    side = cfg.model.data_preprocessor.size[0]
    n = grid_sizes(model)(side)
    ramp = torch.arange(n, dtype=torch.float64).view(1, 1, 1, n)
    deltas = []
    for head in (model.decode_head, model.auxiliary_head):
        if head is None:
            continue
        feature_at = resize(ramp, size=(1, side), mode='bilinear',
                            align_corners=head.align_corners)[0, 0, 0]
        mid = side // 2
        slope = float(feature_at[mid + 1] - feature_at[mid])
        pixel_of = mid + (torch.arange(n) - feature_at[mid]) / slope
        deltas.append(pixel_of - STRIDE * torch.arange(n))
    deltas = torch.cat(deltas)
    assert float(deltas.max() - deltas.min()) < 0.01, (
        f'the training upsampling pairs feature n with pixel 16n + delta, '
        f'delta from {float(deltas.min()):.2f} to {float(deltas.max()):.2f} '
        f'across a {side}-pixel crop')
    return float(deltas.mean())


def oracle(model, delta: float, num_classes: int):
    """Replace the network (backbone and the decode head's layers, not
    its upsampling) with one whose feature n holds the class frequencies
    of the labelled pixels within 8 px of 16n + delta of its input. The
    input carries the label map in channel 0 and 1 where a pixel is
    labelled (not void, not padding) in channel 1."""
    first = int(np.ceil(delta - STRIDE / 2))
    last = int(np.floor(delta + STRIDE / 2))
    size = grid_sizes(model)

    def extract_feat(inputs):
        label, valid = inputs[:, 0].round().long(), inputs[:, 1:2]
        onehot = torch.stack([(label == c) for c in range(num_classes)],
                             1).to(inputs.dtype) * valid
        h, w = size(inputs.shape[-2]), size(inputs.shape[-1])
        kernel = last - first + 1

        def cells(x):  # sums over [16n + first, 16n + last]
            x = F.pad(x, (-first, STRIDE * w + last - x.shape[-1],
                          -first, STRIDE * h + last - x.shape[-2]))
            return F.avg_pool2d(x, kernel, STRIDE)[..., :h, :w] * kernel**2

        freq = cells(onehot) / cells(valid).clamp(min=1e-6)
        return [freq] * 4

    model.extract_feat = extract_feat
    model.decode_head.forward = lambda inputs: inputs[
        model.decode_head.in_index]
    return model


def labels_at(gt: np.ndarray, hw) -> np.ndarray:
    """``gt`` sampled at an image size ``hw`` with pixel centres aligned
    (the nearest label), as the test pipeline's Resize maps the image."""
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * gt.shape[0] / hw[0]),
                      gt.shape[0] - 1).astype(int)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * gt.shape[1] / hw[1]),
                      gt.shape[1] - 1).astype(int)
    return gt[rows][:, cols]


def oracle_predictions(path, data_root, count=None):
    """(prediction, ground truth) of the oracle for the first ``count``
    validation images of the bundled data, through ``path``'s test
    path."""
    cfg, model = build(path)
    delta = training_offset(cfg, model)
    num_classes = cfg.model.decode_head.num_classes
    oracle(model, delta, num_classes)
    val = dict(cfg.val_dataloader.dataset, type='VOCShapesDataset',
               data_root=data_root, ann_file='ImageSets/Segmentation/val.txt',
               data_prefix=dict(img_path='JPEGImages',
                                seg_map_path='SegmentationClass'))
    dataset = scoped_build(val, 'mmseg', DATASETS)
    pairs = []
    for i in range(count or len(dataset)):
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
        inputs, [sample] = data['inputs'], data['data_samples']
        gt = sample.gt_sem_seg.data[0].numpy()
        img_hw = tuple(sample.img_shape)
        label = labels_at(gt, img_hw)
        coded = torch.zeros_like(inputs)
        coded[0, 0, :img_hw[0], :img_hw[1]] = torch.from_numpy(
            label.astype(np.float32))
        coded[0, 1, :img_hw[0], :img_hw[1]] = torch.from_numpy(
            (label != VOID).astype(np.float32))
        with torch.no_grad():
            [result] = model.predict(coded, [sample])
        pairs.append((result.pred_sem_seg.data[0].numpy(), gt))
    return pairs


@pytest.mark.parametrize('path', DEMOS, ids=['bcn', 'gn'])
def test_demo_predictions_sit_on_the_ground_truth(path, shapes):
    pairs = oracle_predictions(path, shapes)
    shift, accuracy = best_shift(pairs, VOID)
    assert shift == (0, 0), (
        f'predictions sit {shift} (down, right) from the ground truth')
    assert accuracy[(0, 0)] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize('path', PAPER, ids=['bn', 'gn-ws', 'syncbcn-ws'])
def test_paper_predictions_sit_on_the_ground_truth(path, shapes):
    """Through the VOC test pipeline: resized to mmseg's 2048x512 scale,
    padded to 513x513, 513x513 windows, resized back."""
    pairs = oracle_predictions(path, shapes, count=6)
    shift, accuracy = best_shift(pairs, VOID)
    assert shift == (0, 0), (
        f'predictions sit {shift} (down, right) from the ground truth')
    assert accuracy[(0, 0)] > 0.9


@pytest.mark.parametrize('path', DEMOS + PAPER, ids=osp.basename)
def test_training_pairs_every_feature_at_one_offset(path):
    """Crops of 16k pixels with align_corners=False (feature n at pixel
    16n + 7.5) or of 16k + 1 with align_corners=True (at 16n): never a
    stretch across the crop."""
    cfg = Config.fromfile(path)
    side = cfg.model.data_preprocessor.size[0]
    for head in ('decode_head', 'auxiliary_head'):
        corners = cfg.model[head].align_corners
        assert side % STRIDE == (1 if corners else 0), (head, side, corners)


def test_demo_training_offset_from_mmseg_resize():
    cfg, model = build(DEMOS[0])
    assert training_offset(cfg, model) == pytest.approx(7.5)


def test_demo_backbone_computes_feature_n_around_pixel_16n():
    """Flipping the input and every kernel flips the features exactly when
    a side of 16k + 1 pixels puts feature n at pixel 16n: the strided
    grid is then symmetric about the image centre."""
    _, model = build(DEMOS[0])
    backbone = model.backbone
    side = 8 * STRIDE + 1
    x = torch.randn(1, 3, side, side, generator=torch.Generator()
                    .manual_seed(0))
    with torch.no_grad():
        plain = backbone(x)[-1]
        for m in backbone.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(m.weight.flip(-1))
        flipped = backbone(x.flip(-1))[-1]
    assert plain.shape[-1] == 9
    torch.testing.assert_close(flipped, plain.flip(-1), rtol=1e-4,
                               atol=1e-4)
