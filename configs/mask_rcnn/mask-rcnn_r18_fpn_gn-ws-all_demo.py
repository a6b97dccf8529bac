# The demo's GN+WS counterpart: the same model, data and schedule with
# GroupNorm in place of BCN (no batch knowledge), for a side-by-side run.
_base_ = './mask-rcnn_r18_fpn_bcn-ws-all_demo.py'

norm_cfg = dict(_delete_=True, type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(norm_cfg=norm_cfg), mask_head=dict(norm_cfg=norm_cfg)))
custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]  # no BCN to update
