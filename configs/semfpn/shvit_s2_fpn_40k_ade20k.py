_base_ = '../_base_/models/semfpn_shvit_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s2.pth')),  # noqa: E501
    neck=dict(in_channels=[128, 308, 448]))
