_base_ = '../_base_/models/retinanet_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s0',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 48, 96, 176]))
