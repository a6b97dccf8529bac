# Demo: DeepLabV3 with BCN+WS trained from scratch on the bundled shapes
# dataset (VOC format, generated into data/voc_shapes on first use), then
# evaluated with mmseg's IoUMetric; minutes on a CPU:
#   python tools/train.py \
#       configs/deeplabv3/deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-128x128_demo.py
# The model and recipe of the BCN+WS VOC config, smaller: a ResNet-18 of
# half width (base_channels=32; the same output stride 16 and ASPP rates)
# trained from scratch, 64-channel heads, 16 groups, 4 classes, 128x128
# crops, one process with 4 images (SyncBCN equals BCN there), 1k
# iterations.
# Geometry: crops of 128 = 16 x 8 pixels give 8 features, and
# align_corners=False upsamples feature n to pixel 16n + 7.5 (align_corners
# =True, the paper config's convention, needs sides of 16k+1). Testing
# keeps exactly the training geometry: images padded to at least 128x128,
# predicted in 128x128 windows (stride 85). Whole images of other sizes
# (160-240 px, mostly not multiples of 16) would stretch ceil(side / 16)
# features over the side and move predictions up-left, by up to 15 px at
# the bottom-right corner (about 4 px on average).
_base_ = './deeplabv3_r101b-d16-mg111_syncbcn-ws_4xb4-30k_voc12aug-513x513.py'

dataset_type = 'VOCShapesDataset'
data_root = 'data/voc_shapes'
crop_size = (128, 128)
num_classes = 4
norm_cfg = dict(type='SyncBCN', num_groups=16)
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size)),
    backbone=dict(
        depth=18, base_channels=32, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(
        in_channels=256,
        channels=64,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False),
    auxiliary_head=dict(
        in_channels=128,
        channels=64,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize', num_classes=num_classes),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMapSize', num_classes=num_classes),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 1000
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
