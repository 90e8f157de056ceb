_base_ = '../_base_/models/yolox_edgevit_100e_coco.py'

# YOLOX-tiny width: neck and head 96 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='xxs',
        init_cfg=dict(
            checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[72, 144, 288], out_channels=96, num_csp_blocks=1),
    bbox_head=dict(in_channels=96, feat_channels=96))
