# Detection "1x" recipe shared by every mmext backbone family: AdamW (lr 1e-4, weight decay 0.05),
# 12 epochs, LinearLR warm-up over the first 500 iterations, then x0.1 at epochs 8 and 11.
# Meant for 16 images per iteration in total (8 GPUs x 2 or 2 GPUs x 8); the recipe lr is not
# rescaled automatically for other totals (see auto_scale_lr).
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # Attention biases (EfficientFormer, LeViT-style tables) get no weight decay.
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}),
)

# 16 = total images per iteration the lr above was set for. Enable with
# `--cfg-options auto_scale_lr.enable=True` to scale lr linearly to another total.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Exact --resume: the random states (Python, NumPy, torch) go into every checkpoint and come back
# on resume (mmext.engine.hooks.RNGStateHook; registered by `import mmext`). tools/train.py adds
# it to configs that lack it.
custom_hooks = [dict(type='RNGStateHook')]
