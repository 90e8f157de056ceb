_base_ = '../_base_/models/mask_rcnn_shvit_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='s1', init_cfg=dict(checkpoint='checkpoints/shvit_s1.pth')),
    neck=dict(in_channels=[128, 224, 320]))
