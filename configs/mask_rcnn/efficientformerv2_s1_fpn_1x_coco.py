_base_ = '../_base_/models/mask_rcnn_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='s1', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s1.pth')),
    neck=dict(in_channels=[32, 48, 120, 224]))
