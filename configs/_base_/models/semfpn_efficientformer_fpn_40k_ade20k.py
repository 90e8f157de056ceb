# Semantic FPN + EfficientFormer (V1), 40k iterations, ADE20K 512x512 crops: the authors' recipe.
# mmseg's sem_fpn composition (fpn_r50 model, ADE20K data, runtime) with the ResNet replaced and
# the authors' optimisation: AdamW lr 2e-4, weight decay 1e-4 on every parameter, poly decay
# (power 0.9) to 0 over 40k iterations, 32 images per iteration.
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
        type='mmext.EfficientFormer',
        arch='l1',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(in_channels=[48, 96, 224, 448], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)

# 8 GPUs x 4 images = 32 images per iteration (the recipe's total, see auto_scale_lr).
train_dataloader = dict(batch_size=4)
