_base_ = '../_base_/models/mask_rcnn_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint='checkpoints/efficientformer_l1.pth')),
    neck=dict(in_channels=[48, 96, 224, 448]))
