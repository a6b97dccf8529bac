# Copyright (c) mmbcn contributors. All rights reserved.
"""The main job: train Mask R-CNN R-18-FPN with BCN+WS (micro-batch, one
image per iteration) from scratch on the bundled shapes data, evaluate bbox
and segm mAP with mmdet's CocoMetric, and say where everything is.

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [train.py options]

The data is generated under data/shapes_coco/ on first use. Pass
--config configs/mask_rcnn/mask-rcnn_r18_fpn_gn-ws-all_demo.py for the
GN+WS counterpart.
"""
import argparse
import glob
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import train  # noqa: E402  (tools/train.py)

DEFAULT = 'configs/mask_rcnn/mask-rcnn_r18_fpn_bcn-ws-all_demo.py'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    args, rest = parser.parse_known_args(argv)
    start = time.time()
    runner = train.main([args.config, '--work-dir', args.work_dir] + rest)
    minutes = (time.time() - start) / 60
    scalars = runner.message_hub.log_scalars
    metrics = {
        key: scalars[f'val/coco/{key}'].current()
        for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50')
        if f'val/coco/{key}' in scalars
    }
    checkpoints = sorted(glob.glob(osp.join(args.work_dir, 'iter_*.pth')),
                         key=osp.getmtime)
    print('\n== mmbcn demo ==')
    print(f'config:      {args.config}')
    print(f'trained:     {runner.iter} iterations in {minutes:.1f} min')
    for key, value in metrics.items():
        print(f'{key + ":":12} {value:.3f}')
    print(f'checkpoint:  {checkpoints[-1] if checkpoints else "none"}')
    print(f'logs:        {osp.join(runner.log_dir, "")}')
    print(f'evaluate:    python tools/test.py {args.config} '
          f'{checkpoints[-1] if checkpoints else "CHECKPOINT"}')
    return metrics


if __name__ == '__main__':
    main()
