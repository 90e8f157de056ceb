# Semantic FPN + EdgeViT, 40k iterations, ADE20K 512x512 crops.
# mmseg's sem_fpn composition (fpn_r50 model, ADE20K data, runtime) with the ResNet replaced by
# EdgeViT (strides 4/8/16/32, as FPNHead expects) and the Semantic FPN recipe shared by every
# mmext family: AdamW lr 2e-4, weight decay 1e-4, poly decay over 40k iterations, 32 images per
# iteration (../schedules/adamw_poly_40k_ade20k.py). See mask_rcnn_edgevit_fpn_1x_coco.py for the
# checkpoint note; the variants in configs/semfpn/ set the arch.
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
        type='mmext.EdgeViT',
        arch='xxs',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[36, 72, 144, 288], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))

# 8 GPUs x 4 images = 32 images per iteration (the recipe's total, see auto_scale_lr).
train_dataloader = dict(batch_size=4)
