# The authors' DeepLabV3 ResNet-101 BCN+WS PASCAL VOC model (paper Table 5:
# 78.10 mIoU on VOC 2012 val), for evaluation with tools/test.py after
#   python tools/model_converters/official_bcn.py \
#       deeplab_resnet101_pascal_v3_gn_ws_lr7e-3_epoch50.pth \
#       checkpoints/deeplabv3_r101_bcn-ws_voc12aug_official.pth
# Changes against mmseg's DeepLabV3 R-101 VOC config: the authors' backbone
# (one 7x7 stem conv, output stride 16, WS 'std' formula, BCN), their ASPP
# head (BCNASPPHead, no auxiliary head) and their evaluation: single scale,
# no flip, the image at its own size (no resize) zero-padded bottom-right
# after normalization to 513x513, PIL decoding.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512.py',
    '../_base_/default_runtime_safe_checkpoints.py'
]

custom_imports = dict(
    imports=['mmbcn', 'mmbcn.models'],  # BCNASPPHead
    allow_failed_imports=False)

crop_size = (513, 513)
norm_cfg = dict(type='BCN', num_groups=32)
conv_cfg = dict(type='WSConv', formula='std')
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size)),
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        contract_dilation=True,
        style='pytorch',
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        norm_eval=False),
    decode_head=dict(
        _delete_=True,
        type='BCNASPPHead',
        in_channels=2048,
        in_index=3,
        channels=256,
        dilations=(1, 6, 12, 18),
        dropout_ratio=0.0,
        num_classes=21,
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None,
    test_cfg=dict(mode='whole'))

test_pipeline = [
    dict(
        type='LoadImageFromFile',
        imdecode_backend='pillow',
        color_type='color_ignore_orientation'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

load_from = 'checkpoints/deeplabv3_r101_bcn-ws_voc12aug_official.pth'

# atomic saves (../_base_/default_runtime_safe_checkpoints.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
