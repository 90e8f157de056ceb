# RetinaNet + SHViT + TransConvFPN, 1x schedule, COCO.
# The same composition as mmdet's retinanet/retinanet_r50_fpn_1x_coco.py, with the schedule
# swapped for mmext's AdamW 1x recipe and the ResNet backbone and FPN replaced. From SHViT's
# strides 16/32/64, TransConvFPN adds stride 8 with one transposed conv and stride 128 with a
# stride-2 conv on the last backbone map, giving strides 8..128 as RetinaNet expects.
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
        type='mmext.SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
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
        num_trans_convs=1,
        add_extra_convs='on_input'))

# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
