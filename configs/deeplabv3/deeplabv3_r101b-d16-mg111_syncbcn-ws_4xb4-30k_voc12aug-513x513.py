# DeepLabV3 ResNet-101 with BCN+WS on PASCAL VOC 2012 + SBD aug, large-batch
# training (paper Sec. 4.3, Table 5: 78.10 mIoU): the recipe of the base
# config with every norm layer a SyncBCN (BCN whose batch step takes its
# statistics over all GPUs: 4 GPUs x 4 images = batch 16) and every conv
# (the heads' classifiers aside) weight-standardized.
# ImageNet weights: the authors' rn101_bcn_ws.pth, converted with
#   python tools/model_converters/official_bcn.py rn101_bcn_ws.pth \
#       checkpoints/r101_bcn-ws_imagenet.pth
# (or train from scratch: --cfg-options model.backbone.init_cfg=None)
_base_ = './deeplabv3_r101b-d16-mg111_4xb4-30k_voc12aug-513x513.py'

norm_cfg = dict(type='SyncBCN', num_groups=32)
conv_cfg = dict(type='WSConv')  # formula 'var', as the ImageNet weights
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(checkpoint='checkpoints/r101_bcn-ws_imagenet.pth')),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
