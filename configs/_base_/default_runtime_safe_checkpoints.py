# Checkpoints loadable with torch.load(weights_only=True) whichever tool
# trains a config that inherits this (ours, mmdet's/mmseg's tools, mim, a
# Runner script), written atomically (README, "Use from mmdet/mmseg tools
# and mim"): WeightsOnlyCheckpointHook here, and in the config itself
#   default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
# since mmengine refuses a key that two _base_ files both set, and the
# mmdet/mmseg configs inherited beside this one set default_hooks.
custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]
