_base_ = '../_base_/models/rtmdet_efficientformerv2_100e_coco.py'

# RTMDet-m width: neck and head 192 channels, 2 CSP block(s) per neck stage.
model = dict(
    backbone=dict(
        arch='l',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/efficientformerv2_l.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[80, 192, 384], out_channels=192, num_csp_blocks=2),
    bbox_head=dict(in_channels=192, feat_channels=192, exp_on_reg=True))
