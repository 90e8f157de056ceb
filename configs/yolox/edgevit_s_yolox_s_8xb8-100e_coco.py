_base_ = '../_base_/models/yolox_edgevit_100e_coco.py'

# YOLOX-s width: neck and head 128 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='s',
        init_cfg=dict(
            checkpoint='checkpoints/edgevit_s.pth')),
    neck=dict(in_channels=[96, 240, 384], out_channels=128, num_csp_blocks=1),
    bbox_head=dict(in_channels=128, feat_channels=128))
