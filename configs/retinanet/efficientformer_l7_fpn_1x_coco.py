_base_ = '../_base_/models/retinanet_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='l7', init_cfg=dict(checkpoint='checkpoints/efficientformer_l7.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
