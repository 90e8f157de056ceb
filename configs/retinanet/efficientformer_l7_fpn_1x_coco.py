_base_ = '../_base_/models/retinanet_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='l7',
        init_cfg=dict(
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l7_3rdparty_in1k_20220915-185e30af.pth')),  # noqa: E501
    neck=dict(in_channels=[192, 384, 768]))
