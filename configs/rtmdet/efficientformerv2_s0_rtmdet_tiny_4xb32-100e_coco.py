_base_ = '../_base_/models/rtmdet_efficientformerv2_100e_coco.py'

# RTMDet-tiny width: neck and head 96 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='s0',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[48, 96, 176], out_channels=96, num_csp_blocks=1),
    bbox_head=dict(in_channels=96, feat_channels=96))
