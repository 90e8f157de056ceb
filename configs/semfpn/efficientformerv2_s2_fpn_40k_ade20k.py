_base_ = '../_base_/models/semfpn_efficientformerv2_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_s2.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 64, 144, 288]))
