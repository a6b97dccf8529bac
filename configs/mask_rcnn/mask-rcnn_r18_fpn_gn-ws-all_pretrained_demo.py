# The demo's GN+WS Mask R-CNN, fine-tuned from a ResNet-18 pretrained with
# GN+WS on the same data and schedule
# (configs/pretrain/resnet18_gn-ws_1xb32_shapes-cls.py): the counterpart
# of mask-rcnn_r18_fpn_bcn-ws-all_pretrained_demo.py.
_base_ = './mask-rcnn_r18_fpn_gn-ws-all_demo.py'

pretrained = 'work_dirs/resnet18_gn-ws_1xb32_shapes-cls/iter_500.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint=pretrained,
            prefix='backbone.')))
