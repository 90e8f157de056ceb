# Mask R-CNN + EdgeViT + FPN, 1x schedule, COCO.
# mmdet's mask-rcnn_r50_fpn_1x_coco composition (model, COCO instance data, runtime) with the
# ResNet replaced by EdgeViT, whose 4 levels at strides 4/8/16/32 feed mmdet's standard FPN, and
# the PVT/Swin-style AdamW 1x recipe the EdgeViT paper's detection comparisons use (lr 1e-4,
# weight decay 0.05, 16 images per iteration; ../schedules/adamw_1x_coco.py).
# The authors released no ImageNet weights: checkpoints/edgevit_<arch>.pth is one you trained with
# their code (or converted with tools/convert_checkpoint.py); without it, train from scratch with
# --cfg-options model.backbone.init_cfg=None. The variants in configs/mask_rcnn/ set the arch.
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
        type='mmext.EdgeViT',
        arch='xxs',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # The BatchNorms of local aggregation would see 2 images per GPU: keep ImageNet statistics.
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[36, 72, 144, 288]))

# 8 GPUs x 2 images = 16 images per iteration (the recipe's total, see auto_scale_lr).
# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
