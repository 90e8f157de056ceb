_base_ = '../_base_/models/semfpn_shvit_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='s3', init_cfg=dict(checkpoint='checkpoints/shvit_s3.pth')),
    neck=dict(in_channels=[192, 352, 448]))
