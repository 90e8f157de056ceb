# Semantic FPN recipe shared by every mmext backbone family: AdamW (lr 2e-4, weight decay 1e-4),
# poly decay (power 0.9) to 0 over 40k iterations, for 32 images per iteration in total
# (8 GPUs x 4 or 4 GPUs x 8); the lr is not rescaled automatically for other totals.
_base_ = ['mmseg::_base_/schedules/schedule_40k.py']

optimizer = dict(
    _delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}),
    clip_grad=None,
)

param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False),
]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)

auto_scale_lr = dict(enable=False, base_batch_size=32)

# Exact --resume: the random states (Python, NumPy, torch) go into every checkpoint and come back
# on resume (mmext.engine.hooks.RNGStateHook; registered by `import mmext`). tools/train.py adds
# it to configs that lack it.
custom_hooks = [dict(type='RNGStateHook')]
