_base_ = '../_base_/models/yolox_efficientformerv2_100e_coco.py'

# YOLOX-s width: neck and head 128 channels, 1 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_s2.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[64, 144, 288], out_channels=128, num_csp_blocks=1),
    bbox_head=dict(in_channels=128, feat_channels=128))
