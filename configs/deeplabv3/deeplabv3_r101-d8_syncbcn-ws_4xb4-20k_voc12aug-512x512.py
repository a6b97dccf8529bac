# mmseg's stock DeepLabV3 R-101-D8 on PASCAL VOC 2012 + SBD aug (4 GPUs x 4
# images, 20k iterations, 512x512 crops, lr 0.01, output stride 8, ASPP
# 12/24/36: 78.70 mIoU with SyncBN, mmseg configs/deeplabv3/README.md) with
# SyncBCN+WS in place of SyncBN: every norm layer a SyncBCN (large-batch BCN,
# batch step synchronized over the 16 images), every conv but the
# classifiers weight-standardized. Everything else is mmseg's file.
# One change follows from the weights: the backbone is the torchvision-style
# ResNet-101 (one 7x7 stem conv, mmseg 'ResNet') that the authors' ImageNet
# BCN+WS model has, instead of ResNetV1c's three-conv stem, for which no
# BCN+WS ImageNet weights exist. Convert them with
#   python tools/model_converters/official_bcn.py rn101_bcn_ws.pth \
#       checkpoints/r101_bcn-ws_imagenet.pth
# (or train from scratch: --cfg-options model.backbone.init_cfg=None).
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512.py',
    '../_base_/default_runtime_safe_checkpoints.py'
]

custom_imports = dict(imports=['mmbcn'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBCN', num_groups=32)
conv_cfg = dict(type='WSConv')  # formula 'var', as the ImageNet weights
model = dict(
    pretrained=None,
    backbone=dict(
        type='ResNet',
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/r101_bcn-ws_imagenet.pth')),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))

# atomic saves (../_base_/default_runtime_safe_checkpoints.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
