# The demo's BCN+WS Mask R-CNN, fine-tuned from a ResNet-18 pretrained
# with BCN+WS in large batches
# (configs/pretrain/resnet18_bcn-ws_1xb32_shapes-cls.py), the paper's
# COCO protocol at small scale (Sec. 4.4). Loading the backbone sets the
# BCN layers' estimates to the statistics kept in pretraining: they are
# Algorithm 1's starting estimates; the FPN and heads, not pretrained,
# start at (0, 1). Train the backbone first (tools/train.py on
# the pretraining config, whose last checkpoint is named here), or let
# `tools/demo.py --pretrained` train, cache and pass it.
_base_ = './mask-rcnn_r18_fpn_bcn-ws-all_demo.py'

pretrained = 'work_dirs/resnet18_bcn-ws_1xb32_shapes-cls/iter_500.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint=pretrained,
            prefix='backbone.')))
