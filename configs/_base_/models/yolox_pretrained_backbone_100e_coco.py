# YOLOX with an ImageNet-pretrained backbone. mmdet ships its pretrained-backbone fine-tuning
# recipe for RTMDet only (rtmdet_l_convnext_b / rtmdet_l_swin_b, 100 epochs, AdamW); this applies
# the same recipe to YOLOX (mmdet::yolox/yolox_s_8xb8-300e_coco.py: its YOLOXPAFPN neck,
# YOLOXHead, Mosaic/RandomAffine/MixUp pipeline and multi-scale batch resizing):
# - ImageNet RGB mean/std (the backbones were trained on them);
# - AdamW instead of YOLOX's from-scratch SGD: RTMDet's pretrained-backbone lr (1e-3 for 128
#   images) scaled linearly to YOLOX's 64 images per iteration (8 GPUs x 8) = 5e-4, weight decay
#   0.05 (none on norms, biases and EfficientFormer's attention-bias tables);
# - 100 epochs instead of 300, YOLOX's schedule shape kept: quadratic warm-up over 5 epochs,
#   cosine to 0.05 x lr until the last 10 epochs, which run at constant lr without
#   Mosaic/RandomAffine/MixUp (YOLOXModeSwitchHook), validated every epoch;
# - YOLOX's own hooks: SyncNormHook and the EMA (ExpMomentumEMA, momentum 1e-4).
# The detector width (neck/head channels, CSP blocks) is set by each model's config.
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True))

max_epochs = 100
num_last_epochs = 10
interval = 10
base_lr = 0.0005

train_cfg = dict(
    max_epochs=max_epochs,
    val_interval=interval,
    dynamic_intervals=[(max_epochs - num_last_epochs, 1)])

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=base_lr, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'attention_biases': dict(decay_mult=0.0)}))

param_scheduler = [
    dict(
        type='mmdet.QuadraticWarmupLR',
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=base_lr * 0.05,
        begin=5,
        T_max=max_epochs - num_last_epochs,
        end=max_epochs - num_last_epochs,
        by_epoch=True,
        convert_to_iter_based=True),
    dict(
        type='ConstantLR',
        by_epoch=True,
        factor=1,
        begin=max_epochs - num_last_epochs,
        end=max_epochs),
]

custom_hooks = [
    dict(type='YOLOXModeSwitchHook', num_last_epochs=num_last_epochs, priority=48),
    dict(type='SyncNormHook', priority=48),
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0001,
        update_buffers=True,
        priority=49),
    dict(type='RNGStateHook'),
]

# Exact --resume: RNGStateHook keeps the random states in every checkpoint; the data workers are
# restarted each epoch (persistent workers would carry random state a checkpoint cannot hold),
# which costs a worker start-up per epoch.
train_dataloader = dict(persistent_workers=False)

# base_lr above is for 8 GPUs x 8 images; `--auto-scale-lr` scales it to your total.
auto_scale_lr = dict(enable=False, base_batch_size=64)
