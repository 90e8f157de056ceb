_base_ = '../_base_/models/semfpn_shvit_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(
        arch='s4',
        init_cfg=dict(
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),  # noqa: E501
    neck=dict(in_channels=[224, 336, 448]))
