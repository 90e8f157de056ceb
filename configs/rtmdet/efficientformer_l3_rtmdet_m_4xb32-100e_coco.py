_base_ = '../_base_/models/rtmdet_efficientformer_100e_coco.py'

# RTMDet-m width: neck and head 192 channels, 2 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='l3',
        init_cfg=dict(
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l3_3rdparty_in1k_20220915-466793d6.pth')),  # noqa: E501
    neck=dict(in_channels=[128, 320, 512], out_channels=192, num_csp_blocks=2),
    bbox_head=dict(in_channels=192, feat_channels=192, exp_on_reg=True))
