"""The bundled VOC-format demo data and bad input: generation (deterministic,
safe under concurrent starts), the dataset, a missing dataset path, and
damaged samples (a mask of another size, an empty image, a missing mask, a
mask value that is no class, a colour mask), each refused naming the
file and what to do."""
import hashlib
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

import mmbcn  # noqa: F401
from mmbcn.datasets import voc_demo
from mmbcn.datasets.voc_demo import (CLASSES, SPLITS, VOID,
                                     generate_voc_shapes, prepare_voc_shapes)
from mmbcn.utils import scoped_build
from tool_runner import REPO, load_tool, tool_env

CONFIGS = osp.join(REPO, 'configs', 'deeplabv3')
DEMO = osp.join(CONFIGS,
                'deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-'
                '128x128_demo.py')
BCN = osp.join(CONFIGS, 'deeplabv3_r101b-d16-mg111_syncbcn-ws_4xb4-30k_'
               'voc12aug-513x513.py')


def digest(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'voc_shapes'
    prepare_voc_shapes(str(root))
    return root


def dataset(root, split, path=DEMO):
    cfg = Config.fromfile(path)
    loader = cfg.train_dataloader if split == 'train' else \
        cfg.val_dataloader
    return scoped_build(dict(loader.dataset, data_root=str(root)), 'mmseg',
                        DATASETS)


def test_generation_is_deterministic(shapes, tmp_path):
    generate_voc_shapes(str(tmp_path / 'again'))
    first, again = digest(shapes), digest(tmp_path / 'again')
    assert first == again
    jpegs = [p for p in first if p.startswith('JPEGImages')]
    pngs = [p for p in first if p.startswith('SegmentationClass')]
    total = sum(count for count, _ in SPLITS.values())
    assert len(jpegs) == len(pngs) == total


def test_voc_layout_palette_masks_and_classes(shapes):
    for split, (count, _) in SPLITS.items():
        names = (shapes / 'ImageSets' / 'Segmentation' /
                 f'{split}.txt').read_text().split()
        assert len(names) == count
        seen = set()
        for name in names:
            with Image.open(shapes / 'JPEGImages' / f'{name}.jpg') as img:
                assert img.format == 'JPEG' and img.mode == 'RGB'
                size = img.size
            with Image.open(shapes / 'SegmentationClass' /
                            f'{name}.png') as mask:
                assert mask.format == 'PNG' and mask.mode == 'P'
                assert mask.size == size
                palette = np.array(mask.getpalette()[:12]).reshape(4, 3)
                labels = np.array(mask)
            assert palette.tolist() == voc_demo.PALETTE
            assert set(np.unique(labels)) <= set(range(len(CLASSES))) | {
                VOID
            }
            seen |= set(np.unique(labels).tolist())
        assert seen == set(range(len(CLASSES))) | {VOID}, split


def test_dataset_yields_aligned_samples(shapes):
    train, val = dataset(shapes, 'train'), dataset(shapes, 'val')
    assert len(train) == SPLITS['train'][0] and len(val) == SPLITS['val'][0]
    assert train.metainfo['classes'] == CLASSES
    sample = train[0]
    assert tuple(sample['inputs'].shape) == (3, 128, 128)
    assert tuple(sample['data_samples'].gt_sem_seg.data.shape) == (1, 128,
                                                                   128)
    sample = val[0]  # the image at its own size, as stored
    name = osp.splitext(osp.basename(sample['data_samples'].img_path))[0]
    stored = np.array(Image.open(shapes / 'SegmentationClass' /
                                 f'{name}.png'))
    assert np.array_equal(sample['data_samples'].gt_sem_seg.data[0].numpy(),
                          stored)


def test_building_the_dataset_generates_missing_data(tmp_path):
    root = tmp_path / 'fresh' / 'voc_shapes'
    assert len(dataset(root, 'val')) == SPLITS['val'][0]
    assert osp.isfile(root / 'ImageSets' / 'Segmentation' / 'train.txt')


def test_losing_the_generation_race_is_harmless(tmp_path, monkeypatch):
    root = tmp_path / 'voc_shapes'
    real = voc_demo.generate_voc_shapes

    def another_process_wins(tmp):
        real(str(root))  # the winner's rename lands first
        real(tmp)

    monkeypatch.setattr(voc_demo, 'generate_voc_shapes',
                        another_process_wins)
    prepare_voc_shapes(str(root))
    assert os.listdir(tmp_path) == ['voc_shapes']  # no temporary copy left
    assert voc_demo._complete(str(root))


@pytest.mark.slow
@pytest.mark.dist
def test_two_processes_generating_at_once(tmp_path, shapes):
    root = tmp_path / 'voc_shapes'
    code = ('import sys; from mmbcn.datasets.voc_demo import '
            'prepare_voc_shapes; prepare_voc_shapes(sys.argv[1])')
    procs = [
        subprocess.Popen([sys.executable, '-c', code, str(root)],
                         env=tool_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert os.listdir(tmp_path) == ['voc_shapes']
    assert digest(root) == digest(shapes)


def test_a_foreign_directory_is_not_overwritten(tmp_path):
    root = tmp_path / 'voc_shapes'
    root.mkdir()
    (root / 'mine.txt').write_text('keep me')
    with pytest.raises(RuntimeError, match='exists but does not hold'):
        prepare_voc_shapes(str(root))
    assert os.listdir(root) == ['mine.txt']
    assert os.listdir(tmp_path) == ['voc_shapes']


def test_missing_voc_fails_before_training_naming_the_key(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/VOCdevkit/VOC2012 is not here
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.datasets\[0\]\.'
                       r"data_root: 'data/VOCdevkit/VOC2012' does not exist"):
        load_tool('train').main([BCN, '--work-dir', str(tmp_path / 'w')])
    assert not (tmp_path / 'w').exists()  # no runner was built


def test_missing_imagenet_weights_say_how_to_convert_them(
        tmp_path, shapes, monkeypatch):
    """With the data in place (the demo's, in VOC layout), the BCN+WS
    config stops at its unconverted ImageNet backbone."""
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    root = str(shapes)
    with pytest.raises(FileNotFoundError,
                       match=r"model\.backbone\.init_cfg\.checkpoint: "
                       r"'checkpoints/r101_bcn-ws_imagenet\.pth' does not "
                       r'exist.*official_bcn\.py.*model\.backbone\.init_cfg'
                       r'=None'):
        load_tool('train').main([
            BCN, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            f'train_dataloader.dataset.datasets.0.data_root={root}',
            f'train_dataloader.dataset.datasets.1.data_root={root}',
            'train_dataloader.dataset.datasets.1.ann_file='
            'ImageSets/Segmentation/train.txt',
            'train_dataloader.dataset.datasets.1.data_prefix.seg_map_path='
            'SegmentationClass', f'val_dataloader.dataset.data_root={root}'
        ])
    assert not (tmp_path / 'w').exists()


def test_missing_demo_folder_fails_before_training_naming_the_key(
        tmp_path, shapes):
    with pytest.raises(FileNotFoundError,
                       match=r'val_dataloader\.dataset\.data_prefix\.'
                       r'seg_map_path: .*SegmentationObject'):
        load_tool('train').main([
            DEMO, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            f'train_dataloader.dataset.data_root={shapes}',
            f'val_dataloader.dataset.data_root={shapes}',
            'val_dataloader.dataset.data_prefix.seg_map_path='
            'SegmentationObject'
        ])


@pytest.fixture
def bad_mask(tmp_path, shapes):
    """A copy of the demo data whose first val mask is 8 pixels narrower."""
    root = tmp_path / 'bad'
    generate_voc_shapes(str(root))
    name = (root / 'ImageSets' / 'Segmentation' / 'val.txt').read_text(
    ).split()[0]
    path = root / 'SegmentationClass' / f'{name}.png'
    with Image.open(path) as mask:
        mask.crop((0, 0, mask.width - 8, mask.height)).save(path)
    return root, name


@pytest.mark.parametrize('path', [DEMO, BCN], ids=['demo', 'voc12aug'])
def test_mask_of_another_size_names_the_files(bad_mask, path):
    root, name = bad_mask
    cfg = Config.fromfile(path)
    ds = scoped_build(
        dict(type='VOCShapesDataset', data_root=str(root),
             ann_file='ImageSets/Segmentation/val.txt',
             data_prefix=dict(img_path='JPEGImages',
                              seg_map_path='SegmentationClass'),
             pipeline=cfg.val_dataloader.dataset.pipeline), 'mmseg',
        DATASETS)
    with pytest.raises(ValueError,
                       match=rf'SegmentationClass/{name}\.png.* is \d+x\d+ '
                       rf'.*but its image .*JPEGImages/{name}\.jpg'):
        ds[0]
    ds[1]  # the others load


@pytest.mark.slow
def test_mask_of_another_size_stops_training(bad_mask, tmp_path):
    root, name = bad_mask
    with pytest.raises(ValueError, match=rf'{name}\.png'):
        load_tool('train').main([
            DEMO, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            'train_dataloader.dataset.ann_file=ImageSets/Segmentation/'
            'val.txt', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'train_dataloader.sampler.shuffle=False',
            f'val_dataloader.dataset.data_root={root}'
        ])


@pytest.fixture
def copy_of_shapes(tmp_path, shapes):
    """A copy of the demo data and the name of its first val image."""
    root = tmp_path / 'voc_shapes'
    shutil.copytree(shapes, root)
    name = (root / 'ImageSets' / 'Segmentation' / 'val.txt').read_text(
    ).split()[0]
    return root, name


def test_empty_image_is_refused_naming_it_and_what_to_do(copy_of_shapes):
    root, name = copy_of_shapes
    (root / 'JPEGImages' / f'{name}.jpg').write_bytes(b'')
    with pytest.raises(ValueError,
                       match=rf"JPEGImages/{name}\.jpg' is empty \(0 bytes\)"
                       r'.*delete .*generated again'):
        dataset(root, 'val')


def test_missing_mask_is_refused_naming_it(copy_of_shapes):
    root, name = copy_of_shapes
    os.remove(root / 'SegmentationClass' / f'{name}.png')
    with pytest.raises(ValueError,
                       match=rf"SegmentationClass/{name}\.png' is missing"):
        dataset(root, 'val')


def rewrite_mask(path, change):
    with Image.open(path) as mask:
        labels, palette = np.array(mask), mask.getpalette()
    out = change(labels)
    if out.ndim == 2:
        img = Image.fromarray(out)
        img.putpalette(palette)
    else:
        img = Image.fromarray(out, 'RGB')
    img.save(path)


def val_with_pipeline_of(root, path):
    """The demo val images through ``path``'s test pipeline."""
    cfg = Config.fromfile(path)
    return scoped_build(
        dict(type='VOCShapesDataset', data_root=str(root),
             ann_file='ImageSets/Segmentation/val.txt',
             data_prefix=dict(img_path='JPEGImages',
                              seg_map_path='SegmentationClass'),
             pipeline=cfg.val_dataloader.dataset.pipeline), 'mmseg',
        DATASETS)


@pytest.mark.parametrize('path', [DEMO, BCN], ids=['demo', 'voc12aug'])
def test_mask_value_that_is_no_class_names_the_files(copy_of_shapes, path):
    root, name = copy_of_shapes

    def to_200(labels):
        labels = labels.copy()
        labels[:4, :4] = 200
        return labels

    rewrite_mask(root / 'SegmentationClass' / f'{name}.png', to_200)
    ds = val_with_pipeline_of(root, path)
    with pytest.raises(ValueError,
                       match=rf'SegmentationClass/{name}\.png.*JPEGImages/'
                       rf'{name}\.jpg.*\[200\].*no class: a pixel is a '
                       r'class index 0\.\.\d+ or 255'):
        ds[0]
    ds[1]  # the others load


@pytest.mark.parametrize('path', [DEMO, BCN], ids=['demo', 'voc12aug'])
def test_colour_mask_names_the_file(copy_of_shapes, path):
    root, name = copy_of_shapes
    rewrite_mask(root / 'SegmentationClass' / f'{name}.png',
                 lambda labels: np.stack([labels] * 3, -1))
    ds = val_with_pipeline_of(root, path)
    with pytest.raises(ValueError,
                       match=rf'SegmentationClass/{name}\.png.*shape '
                       r'\(\d+, \d+, 3\).*single-channel PNG'):
        ds[0]
    ds[1]
