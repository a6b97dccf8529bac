# Copyright (c) mmbcn contributors. All rights reserved.
"""The demo's tasks: their runs (key -> name in tables and pictures,
config), the metrics of the table and the validation curves; the detection
demo's data (``--data``); where the repository and the worker command are
(the demo trains the repository's configs, named relative to it)."""
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def worker_command(job: str) -> list:
    """The command that runs the worker job file ``job``."""
    return [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--worker',
            job]


TASKS = {
    'detection':
    dict(
        runs={
            'bcn': ('BCN+WS',
                    'configs/mask_rcnn/mask-rcnn_r18_fpn_bcn-ws-all_demo.py'),
            'gn':
            ('GN+WS', 'configs/mask_rcnn/mask-rcnn_r18_fpn_gn-ws-all_demo.py'),
        },
        metrics=[('bbox mAP', 'coco/bbox_mAP'),
                 ('bbox mAP@50', 'coco/bbox_mAP_50'),
                 ('segm mAP', 'coco/segm_mAP'),
                 ('segm mAP@50', 'coco/segm_mAP_50')],
        curves=[('coco/bbox_mAP', 'bbox mAP'), ('coco/segm_mAP', 'segm mAP')]),
    'segmentation':
    dict(
        runs={
            'bcn': ('SyncBCN+WS', 'configs/deeplabv3/deeplabv3_r18b-d16_'
                    'syncbcn-ws_1xb4-1k_voc-shapes-128x128_demo.py'),
            'gn': ('GN+WS', 'configs/deeplabv3/deeplabv3_r18b-d16_gn-ws_'
                   '1xb4-1k_voc-shapes-128x128_demo.py'),
            'bn': ('SyncBN', 'configs/deeplabv3/deeplabv3_r18b-d16_syncbn_'
                   '1xb4-1k_voc-shapes-128x128_demo.py'),
        },
        metrics=[('mIoU', 'mIoU'), ('mAcc', 'mAcc'), ('aAcc', 'aAcc')],
        curves=[('mIoU', 'mIoU')]),
}
HARD_ROOT = 'data/shapes_coco_hard/'
# --data (detection): the config options of every run that train and
# validate on it ('shapes': the configs' own, the 'easy' shapes data)
DATA = {
    'shapes': [],
    'shapes-hard': [
        f'{loader}.dataset.{key}={value}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
        for key, value in (('data_root', HARD_ROOT), ('variant', 'hard'))
    ] + [
        f'{evaluator}.ann_file={HARD_ROOT}annotations/instances_val.json'
        for evaluator in ('val_evaluator', 'test_evaluator')
    ],
}
DEFAULT_DATA = 'shapes'
RUNS = ('bcn', 'gn', 'bn')  # the order of rows, curves and pictures
REFERENCE = 'GN+WS'  # --summarize: paired differences against this run
DEFAULT_RUNS = ('bcn', 'gn')


def run_key(row: dict, task: str) -> str:
    """The run ('bcn', 'gn', 'bn') of a results.json row; rows written
    before rows named their run are matched by name."""
    if 'run' in row:
        return row['run']
    names = {name: run for run, (name, _) in TASKS[task]['runs'].items()}
    return names.get(row['name'], row['name'])


def run_names(task: str) -> list:
    """The names of ``task``'s runs, in the order of the table."""
    runs = TASKS[task]['runs']
    return [runs[r][0] for r in RUNS if r in runs]
