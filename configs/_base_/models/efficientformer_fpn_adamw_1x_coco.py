# The authors' EfficientFormer detection optimisation (Mask R-CNN and RetinaNet 1x): AdamW lr 2e-4,
# weight decay 1e-4 on every parameter (no exemptions, as the authors train), linear warm-up over
# 500 iterations from 1e-6 x lr, x0.1 at epochs 8 and 11, 12 epochs, 16 images per iteration.
# Only the lr, weight decay and warm-up differ from the shared recipe it inherits.
_base_ = ['../schedules/adamw_1x_coco.py']

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
