_base_ = '../_base_/models/retinanet_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='s0', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s0.pth')),
    neck=dict(in_channels=[32, 48, 96, 176]))
