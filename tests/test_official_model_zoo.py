"""``model-index.yml`` / ``metafile.yml``: OpenMMLab's format, the paper's
numbers, and the files they name."""
import os.path as osp

import yaml
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OFFICIAL_URL = 'https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'

# Paper Table 3 (top-1 / top-5 error, BCN+WS) and Table 5 (VOC val mIoU).
IMAGENET_ERRORS = {
    'r50_bcn-ws_imagenet': ('rn50_bcn_ws.pth', 23.09, 6.55),
    'r101_bcn-ws_imagenet': ('rn101_bcn_ws.pth', 21.29, 5.60),
    'x50-32x4d_bcn-ws_imagenet': ('rx50_bcn_ws.pth', 22.08, 5.99),
}
DEEPLAB = 'deeplabv3_r101-d8_bcn-ws-official_4xb4-voc12aug-513x513'


def load_yaml(name):
    with open(osp.join(REPO, name)) as f:
        return yaml.safe_load(f)


def models():
    index = load_yaml('model-index.yml')
    assert index == {'Import': ['metafile.yml']}
    metafile = load_yaml('metafile.yml')
    collections = {c['Name'] for c in metafile['Collections']}
    for model in metafile['Models']:
        assert model['In Collection'] in collections
        assert model['Converted From']['Weights'].startswith(OFFICIAL_URL)
    return {m['Name']: m for m in metafile['Models']}


def test_imagenet_backbones():
    listed = models()
    docs = open(osp.join(REPO, 'docs', 'model_zoo.md')).read()
    for name, (official, top1_err, top5_err) in IMAGENET_ERRORS.items():
        model = listed[name]
        assert model['Converted From']['Weights'] == OFFICIAL_URL + official
        (result, ) = model['Results']
        assert result['Dataset'] == 'ImageNet-1k'
        metrics = result['Metrics']
        assert round(100 - metrics['Top 1 Accuracy'], 2) == top1_err
        assert round(100 - metrics['Top 5 Accuracy'], 2) == top5_err
        # The converted file's fixed path, as the detection configs use it.
        assert (f'official_bcn.py {official} checkpoints/{name}.pth' in docs)


def test_deeplabv3():
    model = models()[DEEPLAB]
    config = osp.join(REPO, model['Config'])
    assert osp.basename(config) == DEEPLAB + '.py'
    assert model['Results'] == [
        dict(
            Task='Semantic Segmentation',
            Dataset='Pascal VOC 2012 + Aug',
            Metrics=dict(mIoU=78.10))
    ]
    load_from = Config.fromfile(config).load_from
    docs = open(osp.join(REPO, 'docs', 'model_zoo.md')).read()
    assert f'    {load_from}\n' in docs
