_base_ = '../_base_/models/semfpn_efficientformer_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint='checkpoints/efficientformer_l3.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
