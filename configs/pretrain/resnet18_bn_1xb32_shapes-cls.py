# The large-batch user's default: BatchNorm with plain convolutions, the
# same model, data and schedule as resnet18_bcn-ws_1xb32_shapes-cls.py.
_base_ = './resnet18_bcn-ws_1xb32_shapes-cls.py'

model = dict(
    backbone=dict(
        conv_cfg=None,
        norm_cfg=dict(_delete_=True, type='BN', requires_grad=True)))
