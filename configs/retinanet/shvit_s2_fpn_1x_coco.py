_base_ = '../_base_/models/retinanet_shvit_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s2.pth')),  # noqa: E501
    neck=dict(in_channels=[128, 308, 448]))
