_base_ = './mask-rcnn_r50_fpn_bcn-ws-all_2x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/r101_bcn-ws_imagenet.pth')))
