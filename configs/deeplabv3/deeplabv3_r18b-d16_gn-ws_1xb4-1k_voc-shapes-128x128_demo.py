# The BCN+WS demo with GN+WS instead (every norm layer a GroupNorm with 16
# groups, WS convs), for a side-by-side run on the bundled shapes data:
#   python tools/train.py \
#       configs/deeplabv3/deeplabv3_r18b-d16_gn-ws_1xb4-1k_voc-shapes-128x128_demo.py
_base_ = './deeplabv3_r18b-d16_syncbcn-ws_1xb4-1k_voc-shapes-128x128_demo.py'

norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)
conv_cfg = dict(type='WSConv', formula='std')
model = dict(
    backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
