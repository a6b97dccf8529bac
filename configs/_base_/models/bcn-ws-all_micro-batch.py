# BCN+WS in every part of a two-stage detector with convolutions ('-all':
# backbone, neck, 4conv1fc box head), micro-batch training (paper Sec. 4.4):
# BCN's batch step from Algorithm 1's estimates (estimate=True), updated at
# the learning rate by BCNUpdateRateHook; the backbone from the authors'
# ImageNet BCN+WS ResNet-50, converted with
#   python tools/model_converters/official_bcn.py rn50_bcn_ws.pth \
#       checkpoints/r50_bcn-ws_imagenet.pth
# mmengine refuses a key that two _base_ files both set, so the model part
# is `bcn_ws_all`, which a config inheriting this beside an mmdet one
# merges into its model (`model = _base_.bcn_ws_all`; a Mask R-CNN adds
# its mask head).
_base_ = '../default_runtime_safe_checkpoints.py'
custom_imports = dict(imports=['mmbcn'], allow_failed_imports=False)

conv_cfg = dict(type='WSConv')
norm_cfg = dict(type='BCN', num_groups=32, estimate=True, requires_grad=True)
bcn_ws_all = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        norm_eval=False,  # BCN is no BatchNorm: its estimates keep learning
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/r50_bcn-ws_imagenet.pth')),
    neck=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg)))
custom_hooks = [dict(type='BCNUpdateRateHook')] + _base_.custom_hooks
