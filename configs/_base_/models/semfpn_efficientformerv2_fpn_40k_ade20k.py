# Semantic FPN + EfficientFormerV2, 40k iterations, ADE20K 512x512 crops: the authors' recipe.
# Their EfficientFormer (V1) recipe (see the base: AdamW lr 2e-4, weight decay 1e-4 on every
# parameter, poly decay with power 0.9 over 40k iterations, 32 images per iteration), with the
# poly decay ending at 1e-6 instead of 0.
_base_ = './semfpn_efficientformer_fpn_40k_ade20k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormerV2',
        arch='s0',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # As the authors: the backbone's BatchNorms stay in eval mode (ImageNet statistics).
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 48, 96, 176]))

param_scheduler = [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40000, by_epoch=False),
]
