_base_ = './faster-rcnn_r50_fpn_bcn-ws-all_1x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/r101_bcn-ws_imagenet.pth')))
