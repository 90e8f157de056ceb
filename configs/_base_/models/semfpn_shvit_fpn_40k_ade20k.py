# Semantic FPN + SHViT + TransConvFPN, 40k iterations, ADE20K 512x512 crops.
# mmseg's sem_fpn composition (fpn_r50 model, ADE20K data, runtime) with mmext's AdamW + poly
# 40k recipe. TransConvFPN turns SHViT's strides 16/32/64 into the 4/8/16/32 levels FPNHead uses.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../schedules/adamw_poly_40k_ade20k.py',
]

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmext.SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),  # noqa: E501
    neck=dict(
        _delete_=True,
        type='mmext.TransConvFPN',
        in_channels=[224, 336, 448],
        out_channels=256,
        num_outs=4,
        num_trans_convs=2),
    decode_head=dict(num_classes=150))

# 8 GPUs x 4 images = 32 images per iteration (the recipe's total, see auto_scale_lr).
train_dataloader = dict(batch_size=4)
