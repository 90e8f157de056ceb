# Mask R-CNN + EfficientFormer (V1) + FPN, 1x schedule, COCO: the authors' recipe.
# mmdet's mask-rcnn_r50_fpn_1x_coco composition (model, COCO instance data, runtime) with the
# ResNet replaced by EfficientFormer (4 levels at strides 4/8/16/32, like ResNet's, so mmdet's
# standard FPN fits) and the authors' optimisation (efficientformer_fpn_adamw_1x_coco.py: AdamW
# lr 2e-4, weight decay 1e-4, warm-up 500 iterations from 1e-6 x lr, steps at epochs 8 and 11,
# 12 epochs, 16 images per iteration). The variants in configs/mask_rcnn/ set the arch.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './efficientformer_fpn_adamw_1x_coco.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormer',
        arch='l1',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # As the authors' dense-prediction backbone: BatchNorm keeps training and every output
        # gets a GroupNorm with one group. With few images per GPU, norm_eval=True may be steadier.
        norm_eval=False,
        out_norm=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(type='FPN', in_channels=[48, 96, 224, 448], out_channels=256, num_outs=5))

# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
