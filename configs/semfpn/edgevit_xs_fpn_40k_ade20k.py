_base_ = '../_base_/models/semfpn_edgevit_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint='checkpoints/edgevit_xs.pth')),
    neck=dict(in_channels=[48, 96, 240, 384]))
