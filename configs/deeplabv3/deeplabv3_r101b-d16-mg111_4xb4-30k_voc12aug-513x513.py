# DeepLabV3 ResNet-101 on PASCAL VOC 2012 + SBD aug with the training recipe
# of the BCN paper (Sec. 4.3, Table 5), SyncBN: the BN baseline (paper:
# 76.49 mIoU) and the base of the GN+WS and BCN+WS configs beside it.
# Changes against mmseg's DeepLabV3 R-101 VOC config:
#   - torchvision-style ResNet-101 ('r101b': one 7x7 stem conv), ImageNet
#     weights from torchvision
#   - output stride 16 in training and testing: strides (1, 2, 2, 1),
#     dilations (1, 1, 1, 2), multi-grid (1, 1, 1) (layer4's first block at
#     rate 1 by contract_dilation, its others at rate 2); ASPP rates 6/12/18
#   - 513x513 crops; SGD lr 0.007, poly decay (power 0.9) to 0, 30k
#     iterations, weight decay 1e-4 (the paper's reference DeepLabV3 code)
#   - align_corners=True in both heads, as the authors' DeepLab: with sides
#     of 16k+1 pixels (513 = 16 x 32 + 1) feature n of the output-stride-16
#     network is computed around pixel 16n, and align_corners=True upsamples
#     it to exactly that pixel. Testing keeps that geometry: each image is
#     padded (bottom-right) to at least 513x513 and predicted in 513x513
#     windows (one window for a VOC image of up to 500 px; overlapping
#     windows, stride 342, for a larger one). mmseg's align_corners=False
#     with 513 crops would stretch the 33 features over 513 pixels, pairing
#     feature n with pixel 16n + 7 at one side of the crop and 16n - 7 at
#     the other (no network can learn that everywhere), and whole-image
#     testing at other sizes would move predictions again.
#   - CheckSegMapSize after LoadAnnotations (a mask of another size than its
#     image, with colours instead of class indices, or with values that are
#     no class stops the run, naming the files)
# Single-scale testing without flip, at mmseg's scale, as upstream.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512.py',
    '../_base_/default_runtime_safe_checkpoints.py'
]

custom_imports = dict(
    imports=['mmbcn', 'mmbcn.datasets.voc_demo'],  # CheckSegMapSize
    allow_failed_imports=False)

crop_size = (513, 513)
num_classes = 21
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size)),
    backbone=dict(
        type='ResNet',
        init_cfg=dict(
            type='Pretrained', checkpoint='torchvision://resnet101'),
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        multi_grid=None,
        contract_dilation=True),
    decode_head=dict(dilations=(1, 6, 12, 18), align_corners=True),
    auxiliary_head=dict(align_corners=True),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(342, 342)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize', num_classes=num_classes),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize', num_classes=num_classes),
    dict(type='PackSegInputs')
]
# VOC 2012 train (1,464, SegmentationClass) + SBD aug (9,118,
# SegmentationClassAug) = the 10,582 training images; val: 1,449.
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(_base_.dataset_train, pipeline=train_pipeline),
        dict(_base_.dataset_aug, pipeline=train_pipeline)
    ]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optimizer = dict(type='SGD', lr=0.007, momentum=0.9, weight_decay=0.0001)
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=30000,
        by_epoch=False)
]
train_cfg = dict(max_iters=30000, val_interval=3000)
# atomic saves (../_base_/default_runtime_safe_checkpoints.py)
default_hooks = dict(
    checkpoint=dict(type='SafeCheckpointHook', interval=3000))
