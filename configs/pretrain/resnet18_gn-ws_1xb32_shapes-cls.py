# The GN+WS counterpart of resnet18_bcn-ws_1xb32_shapes-cls.py: the same
# model, data and schedule with GroupNorm (32 groups) in place of BCN, the
# backbone of configs/mask_rcnn/mask-rcnn_r18_fpn_gn-ws-all_pretrained_demo.py.
_base_ = './resnet18_bcn-ws_1xb32_shapes-cls.py'

model = dict(
    backbone=dict(
        norm_cfg=dict(
            _delete_=True, type='GN', num_groups=32, requires_grad=True)))
