_base_ = '../_base_/models/retinanet_shvit_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='s3', init_cfg=dict(checkpoint='checkpoints/shvit_s3.pth')),
    neck=dict(in_channels=[192, 352, 448]))
