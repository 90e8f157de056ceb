_base_ = '../_base_/models/mask_rcnn_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint='checkpoints/efficientformer_l3.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
