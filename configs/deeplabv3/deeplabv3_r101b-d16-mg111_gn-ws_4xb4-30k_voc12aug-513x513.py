# DeepLabV3 ResNet-101 with GN+WS on PASCAL VOC 2012 + SBD aug (paper
# Table 5: 77.20 mIoU): the recipe of the base config with every norm layer
# a GroupNorm (32 groups) and every conv (the heads' classifiers aside)
# weight-standardized.
# ImageNet weights: the WS authors' ResNet-101 GN+WS (as mmdet's gn+ws
# configs), trained with the 'std' WS formula.
_base_ = './deeplabv3_r101b-d16-mg111_4xb4-30k_voc12aug-513x513.py'

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
conv_cfg = dict(type='WSConv', formula='std')
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(checkpoint='open-mmlab://jhu/resnet101_gn_ws')),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
