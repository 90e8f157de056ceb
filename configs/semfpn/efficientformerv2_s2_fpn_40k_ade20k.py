_base_ = '../_base_/models/semfpn_efficientformerv2_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='s2', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s2.pth')),
    neck=dict(in_channels=[32, 64, 144, 288]))
