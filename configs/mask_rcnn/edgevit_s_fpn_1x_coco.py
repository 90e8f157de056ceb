_base_ = '../_base_/models/mask_rcnn_edgevit_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='s', init_cfg=dict(checkpoint='checkpoints/edgevit_s.pth')),
    neck=dict(in_channels=[48, 96, 240, 384]))
