_base_ = '../_base_/models/rtmdet_efficientformer_100e_coco.py'

# RTMDet-s width: neck and head 128 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='l1',
        init_cfg=dict(
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(in_channels=[96, 224, 448], out_channels=128, num_csp_blocks=1),
    bbox_head=dict(in_channels=128, feat_channels=128))
