# Mask R-CNN + EfficientFormerV2 + FPN, 1x schedule, COCO: the authors' recipe.
# The authors train V2 detectors with their EfficientFormer (V1) recipe (see the base: mmdet's
# Mask R-CNN with a standard FPN on the 4 levels at strides 4/8/16/32, AdamW lr 2e-4, linear
# warm-up over 500 iterations from 1e-6 x lr, x0.1 at epochs 8 and 11, 12 epochs, 16 images per
# iteration), with weight decay 0.05 instead of 1e-4, on every parameter.
# The variants in configs/mask_rcnn/ set the arch.
_base_ = './mask_rcnn_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormerV2',
        arch='s0',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # The authors keep every BatchNorm of the backbone in eval mode for dense prediction
        # (2 images per GPU are too few for BN statistics); the maps go to the FPN unnormalised.
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 48, 96, 176]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
