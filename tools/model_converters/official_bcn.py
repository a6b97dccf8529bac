# Copyright (c) mmbcn contributors. All rights reserved.
"""Convert an official BCN+WS checkpoint (the authors' ImageNet ResNet-50,
ResNet-101, ResNeXt-50 32x4d or PASCAL VOC DeepLabV3-R101) into an mmengine
checkpoint for mmdet / mmseg.

    python tools/model_converters/official_bcn.py SRC DST

The key mapping is documented in :mod:`mmbcn.models.official_checkpoint`.
"""
import argparse
import sys

from mmbcn.models.official_checkpoint import (OfficialCheckpointError,
                                              convert_official_checkpoint)
from mmbcn.utils import OutputPathError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert the authors\' released BCN+WS checkpoints '
        '(rn50_bcn_ws.pth, rn101_bcn_ws.pth, rx50_bcn_ws.pth, '
        'deeplab_resnet101_pascal_v3_*.pth) to mmdet / mmseg keys')
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output mmengine checkpoint')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert_official_checkpoint(args.src, args.dst)
    except (OfficialCheckpointError, OutputPathError) as e:
        print(f'error: {e}\n{args.dst} was not written', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
