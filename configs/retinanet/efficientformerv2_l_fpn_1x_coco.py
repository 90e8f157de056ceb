_base_ = '../_base_/models/retinanet_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='l', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_l.pth')),
    neck=dict(in_channels=[40, 80, 192, 384]))
