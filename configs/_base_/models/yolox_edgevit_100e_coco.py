# YOLOX with EdgeViT (strides 8/16/32): the yolox recipe for
# ImageNet-pretrained backbones of yolox_pretrained_backbone_100e_coco.py.
# Stages 1-3 (strides 8/16/32). EdgeViT has no official ImageNet weights: supply
# checkpoints/edgevit_<arch>.pth (see README) or train from scratch with
# model.backbone.init_cfg=None.
# Each model's config sets the arch, its channels, its checkpoint and the detector width.
_base_ = './yolox_pretrained_backbone_100e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EdgeViT',
        arch='xxs',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # 32 (RTMDet) or 8 (YOLOX) images per GPU: BN trains
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[72, 144, 288]))
