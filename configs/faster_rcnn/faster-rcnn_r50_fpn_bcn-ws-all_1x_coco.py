# Faster R-CNN R-50-FPN with BCN+WS in backbone, neck and 4conv1fc box head,
# micro-batch training (paper Sec. 4.4, Table 6): 1 image per GPU, BCN's
# batch step from Algorithm 1's estimates, updated at the learning rate.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/models/bcn-ws-all_micro-batch.py'
]

model = _base_.bcn_ws_all
train_dataloader = dict(batch_size=1)
# lr 0.02 at batch 16 scaled to the total batch: 4 GPUs x 1 image -> 0.005.
auto_scale_lr = dict(enable=True, base_batch_size=16)
# atomic saves (../_base_/default_runtime_safe_checkpoints.py)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
