# Faster R-CNN R-50-FPN with BCN+WS in backbone, neck and 4conv1fc box head,
# micro-batch training (paper Sec. 4.4, Table 6): 1 image per GPU, BCN's
# batch step from Algorithm 1's estimates, updated at the learning rate.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbcn'], allow_failed_imports=False)

conv_cfg = dict(type='WSConv')
norm_cfg = dict(type='BCN', num_groups=32, estimate=True, requires_grad=True)
model = dict(
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

train_dataloader = dict(batch_size=1)
# lr 0.02 at batch 16 scaled to the total batch: 4 GPUs x 1 image -> 0.005.
auto_scale_lr = dict(enable=True, base_batch_size=16)
# Checkpoints loadable with torch.load(weights_only=True) whichever tool
# trains this config (ours, mmdet's/mmseg's tools, mim, a Runner script),
# written atomically (README, "Use from mmdet/mmseg tools and mim").
custom_hooks = [
    dict(type='BCNUpdateRateHook'),
    dict(type='WeightsOnlyCheckpointHook')
]
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
