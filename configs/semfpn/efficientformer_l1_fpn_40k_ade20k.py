_base_ = '../_base_/models/semfpn_efficientformer_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint='checkpoints/efficientformer_l1.pth')),
    neck=dict(in_channels=[48, 96, 224, 448]))
