# RTMDet with EfficientFormerV2 (strides 8/16/32): the rtmdet recipe for
# ImageNet-pretrained backbones of rtmdet_pretrained_backbone_100e_coco.py.
# Stages 1-3 (strides 8/16/32).
# Each model's config sets the arch, its channels, its checkpoint and the detector width.
_base_ = './rtmdet_pretrained_backbone_100e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormerV2',
        arch='s0',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # 32 (RTMDet) or 8 (YOLOX) images per GPU: BN trains
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[48, 96, 176]))
