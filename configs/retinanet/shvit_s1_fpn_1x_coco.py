_base_ = '../_base_/models/retinanet_shvit_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s1',
        init_cfg=dict(
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s1.pth')),  # noqa: E501
    neck=dict(in_channels=[128, 224, 320]))
