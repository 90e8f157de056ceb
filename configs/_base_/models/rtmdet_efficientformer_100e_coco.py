# RTMDet with EfficientFormer (strides 8/16/32): the rtmdet recipe for
# ImageNet-pretrained backbones of rtmdet_pretrained_backbone_100e_coco.py.
# Stages 1-3 (strides 8/16/32) with the authors' output norms (out_norm=True), as their
# detection models use.
# Each model's config sets the arch, its channels, its checkpoint and the detector width.
_base_ = './rtmdet_pretrained_backbone_100e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormer',
        arch='l1',
        out_indices=(1, 2, 3),
        out_norm=True,
        frozen_stages=-1,
        norm_eval=False,  # 32 (RTMDet) or 8 (YOLOX) images per GPU: BN trains
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(in_channels=[96, 224, 448]))
