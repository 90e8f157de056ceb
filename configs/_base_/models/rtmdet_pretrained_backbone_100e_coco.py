# RTMDet with an ImageNet-pretrained backbone: mmdet's own fine-tuning recipe for pretrained
# backbones in RTMDet (mmdet::rtmdet/rtmdet_l_convnext_b_4xb32-100e_coco.py and
# rtmdet_l_swin_b_4xb32-100e_coco.py), applied to the CSPNeXtPAFPN neck and RTMDetSepBNHead of
# mmdet's RTMDet-S:
# - ImageNet RGB mean/std (the backbones were trained on them), no batch augments; batches
#   padded to a multiple of 32 (as YOLOX does) so that any image size gives stride-8/16/32 maps
#   that the PAFPN's 2x upsampling lines up (the pipelines pad to 640x640 anyway);
# - AdamW lr 1e-3 for 128 images per iteration (4 GPUs x 32), weight decay 0.05 (none on norms
#   and biases, nor on EfficientFormer's attention-bias tables), 1000-iteration linear warm-up,
#   cosine decay to 0.05 x lr over epochs 50-100;
# - 100 epochs instead of 300 from scratch; the last 10 on the weaker stage-2 pipeline
#   (PipelineSwitchHook), validated every epoch from then on;
# - EMA of the weights (ExpMomentumEMA, momentum 2e-4) as in every RTMDet recipe.
# Not taken from those recipes: ConvNeXt's layer-wise lr decay (its constructor is ConvNeXt's),
# and GroupNorm(32) in neck and head (our backbones' widths, e.g. EdgeViT-XXS's 72/144 or a
# tiny neck's 48-channel CSP branches, do not divide by 32): neck and head keep RTMDet's BN
# (SyncBN; mmengine reverts it to BN on one process).
# The detector width (neck/head channels, CSP blocks) is set by each model's config.
_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        batch_augments=None))

max_epochs = 100
stage2_num_epochs = 10
interval = 10
base_lr = 0.001

train_cfg = dict(
    max_epochs=max_epochs,
    val_interval=interval,
    dynamic_intervals=[(max_epochs - stage2_num_epochs, 1)])

optim_wrapper = dict(
    optimizer=dict(lr=base_lr),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0e-5, by_epoch=False, begin=0, end=1000),
    dict(
        # cosine lr from epoch 50 to 100
        type='CosineAnnealingLR',
        eta_min=base_lr * 0.05,
        begin=max_epochs // 2,
        end=max_epochs,
        T_max=max_epochs // 2,
        by_epoch=True,
        convert_to_iter_based=True),
]

custom_hooks = [
    dict(
        type='EMAHook',
        ema_type='ExpMomentumEMA',
        momentum=0.0002,
        update_buffers=True,
        priority=49),
    dict(
        type='PipelineSwitchHook',
        switch_epoch=max_epochs - stage2_num_epochs,
        switch_pipeline={{_base_.train_pipeline_stage2}}),
    dict(type='RNGStateHook'),
]

# Exact --resume: RNGStateHook keeps the random states in every checkpoint; the data workers are
# restarted each epoch (persistent workers would carry random state a checkpoint cannot hold),
# which costs a worker start-up per epoch.
train_dataloader = dict(persistent_workers=False)

# base_lr above is for 4 GPUs x 32 images; `--auto-scale-lr` scales it to your total.
auto_scale_lr = dict(enable=False, base_batch_size=128)
