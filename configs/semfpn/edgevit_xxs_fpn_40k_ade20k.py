_base_ = '../_base_/models/semfpn_edgevit_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(arch='xxs', init_cfg=dict(checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[36, 72, 144, 288]))
