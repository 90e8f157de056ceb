_base_ = '../_base_/models/retinanet_efficientformerv2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_l.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[40, 80, 192, 384]))
