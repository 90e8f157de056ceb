_base_ = '../_base_/models/yolox_efficientformer_100e_coco.py'

# YOLOX-m width: neck and head 192 channels, 2 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='l7',
        init_cfg=dict(
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l7_3rdparty_in1k_20220915-185e30af.pth')),  # noqa: E501
    neck=dict(in_channels=[192, 384, 768], out_channels=192, num_csp_blocks=2),
    bbox_head=dict(in_channels=192, feat_channels=192))
