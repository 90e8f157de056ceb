_base_ = '../_base_/models/rtmdet_shvit_100e_coco.py'

# RTMDet-s width: neck and head 128 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='s3',
        init_cfg=dict(
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s3.pth')),  # noqa: E501
    neck=dict(in_channels=[96, 192, 352], out_channels=128, num_csp_blocks=1),
    bbox_head=dict(in_channels=128, feat_channels=128))
