_base_ = '../_base_/models/mask_rcnn_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_s2.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 64, 144, 288]))
