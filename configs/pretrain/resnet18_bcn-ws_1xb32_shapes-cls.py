# Pretraining a ResNet-18 with BCN+WS in large batches (paper Sec. 3: the
# batch step's statistics come from the 32 images of each batch, Eq. 13,
# and their running averages are kept), as the authors pretrained their
# ImageNet backbones, at small scale: the bundled shapes classification set
# (7 classes: which of square, circle, triangle a scene shows; 64x64
# images, generated under data/ on first use). The backbone is the
# detection demo's; configs/mask_rcnn/*_pretrained_demo.py fine-tune from
# it, where the running statistics become Algorithm 1's starting estimates.
# `tools/demo.py --pretrained` trains it (cached) before the detectors.
_base_ = '../_base_/default_runtime_safe_checkpoints.py'

default_scope = 'mmdet'
custom_imports = dict(
    imports=['mmbcn', 'mmbcn.datasets.shapes_cls', 'mmbcn.models.classifiers'],
    allow_failed_imports=False)

data_root = 'data/shapes_cls/'
batch_size = 32
max_iters = 500

conv_cfg = dict(type='WSConv')
norm_cfg = dict(type='BCN', num_groups=32, requires_grad=True)
model = dict(
    type='BackboneClassifier',
    data_preprocessor=dict(
        type='ImgDataPreprocessor',  # as the detector's: BGR files -> RGB
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=-1,
        style='pytorch',
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        norm_eval=False),
    num_classes=7)

train_pipeline = [
    dict(
        type='mmcv.RandomFlip',
        prob=0.75,
        direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackClsInputs')
]
test_pipeline = [dict(type='PackClsInputs')]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='ShapesClsDataset',
        data_root=data_root,
        ann_file='train.npz',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=100,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ShapesClsDataset',
        data_root=data_root,
        ann_file='val.npz',
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Top1Accuracy')
test_evaluator = val_evaluator

train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters // 4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters)
]
auto_scale_lr = dict(enable=False, base_batch_size=batch_size)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
