# Mask R-CNN + SHViT + TransConvFPN, 1x schedule, COCO.
# The same composition as mmdet's mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py (model, COCO instance
# data, schedule, runtime), with the schedule swapped for mmext's AdamW 1x recipe and the ResNet
# backbone and FPN replaced. SHViT's levels are at strides 16/32/64; TransConvFPN adds the
# stride-8 and stride-4 levels with two transposed convs, giving strides 4..64 as RPN/RoI expect.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../schedules/adamw_1x_coco.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        # 2 images per GPU are too few for BatchNorm statistics: keep the ImageNet ones.
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),  # noqa: E501
    neck=dict(
        _delete_=True,
        type='mmext.TransConvFPN',
        in_channels=[224, 336, 448],
        out_channels=256,
        num_outs=5,
        num_trans_convs=2))

# 8 GPUs x 2 images = 16 images per iteration (the recipe's total, see auto_scale_lr).
# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
