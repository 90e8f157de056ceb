# RetinaNet + EdgeViT + FPN, 1x schedule, COCO.
# mmdet's retinanet_r50_fpn_1x_coco composition with the ResNet replaced by EdgeViT and the
# PVT/Swin-style AdamW 1x recipe (lr 1e-4, weight decay 0.05, 16 images per iteration). mmdet's
# RetinaNet FPN starts at level 1 (stride 8) and adds strides 64 and 128 with stride-2 convs on the
# last backbone map ('on_input'), as for ResNet and PVT. See mask_rcnn_edgevit_fpn_1x_coco.py for
# the checkpoint note; the variants in configs/retinanet/ set the arch.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../schedules/adamw_1x_coco.py',
    'mmdet::_base_/default_runtime.py',
    'mmdet::retinanet/retinanet_tta.py',
]

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EdgeViT',
        arch='xxs',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/edgevit_xxs.pth')),
    neck=dict(in_channels=[36, 72, 144, 288]))

# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
