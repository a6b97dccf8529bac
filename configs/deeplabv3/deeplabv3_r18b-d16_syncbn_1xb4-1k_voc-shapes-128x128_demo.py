# The BCN+WS demo with SyncBN and plain convolutions instead (every norm
# layer a SyncBatchNorm, no weight standardization: what a large-batch
# mmseg user trains by default), for a side-by-side run on the bundled
# shapes data:
#   python tools/train.py \
#       configs/deeplabv3/deeplabv3_r18b-d16_syncbn_1xb4-1k_voc-shapes-128x128_demo.py
# One process: the batch statistics are those of its 4 images (mmengine
# turns SyncBN into BatchNorm when the run is not distributed).
_base_ = './deeplabv3_r18b-d16_gn-ws_1xb4-1k_voc-shapes-128x128_demo.py'

# _delete_: nothing of the base's GroupNorm settings (num_groups) is kept
norm_cfg = dict(_delete_=True, type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(conv_cfg=None, norm_cfg=norm_cfg),
    decode_head=dict(conv_cfg=None, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=None, norm_cfg=norm_cfg))
