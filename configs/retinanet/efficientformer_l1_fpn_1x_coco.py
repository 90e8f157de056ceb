_base_ = '../_base_/models/retinanet_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='l1',
        init_cfg=dict(
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(in_channels=[96, 224, 448]))
