_base_ = '../_base_/models/retinanet_edgevit_fpn_1x_coco.py'

model = dict(
    backbone=dict(arch='xxs', init_cfg=dict(checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[36, 72, 144, 288]))
