# YOLOX with SHViT (strides 8/16/32): the yolox recipe for
# ImageNet-pretrained backbones of yolox_pretrained_backbone_100e_coco.py.
# SHViT's stages start at stride 16: stride8='upsample' adds a stride-8 map (a learned
# transposed Conv-BN-ReLU from the stride-16 map, embed_dims[0] // 2 channels) before the stage
# maps of out_indices=(0, 1). On the generated demo data it beat the stem's stride-8 map
# (stride8='stem') in AP at ~6% more backbone time; see the README.
# Each model's config sets the arch, its channels, its checkpoint and the detector width.
_base_ = './yolox_pretrained_backbone_100e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.SHViT',
        arch='s1',
        stride8='upsample',
        out_indices=(0, 1),
        frozen_stages=-1,
        norm_eval=False,  # 32 (RTMDet) or 8 (YOLOX) images per GPU: BN trains
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s1.pth')),  # noqa: E501
    neck=dict(in_channels=[64, 128, 224]))
