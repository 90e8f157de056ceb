# RetinaNet + EfficientFormer (V1) + FPN, 1x schedule, COCO, with the authors' detection
# optimisation (efficientformer_fpn_adamw_1x_coco.py, as for Mask R-CNN).
# mmdet's standard RetinaNet FPN: levels from stride 8, the two extra levels by stride-2 convs on
# the last backbone map (add_extra_convs='on_input'), strides 8..128. The backbone returns stages
# 1-3 only (not stage 0 with start_level=1, as for ResNet): stage 0's output norm would be a
# parameter without gradient, which DistributedDataParallel refuses.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './efficientformer_fpn_adamw_1x_coco.py',
    'mmdet::_base_/default_runtime.py',
    'mmdet::retinanet/retinanet_tta.py',
]

custom_imports = dict(imports=['mmext'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormer',
        arch='l1',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        out_norm=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/efficientformer/efficientformer-l1_3rdparty_in1k_20220915-cc3e1ac6.pth')),  # noqa: E501
    neck=dict(
        type='FPN',
        in_channels=[96, 224, 448],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))

# persistent_workers=False: workers restart each epoch, so their random state starts from the
# seed the checkpoint holds and --resume is bit-exact (RNGStateHook).
train_dataloader = dict(batch_size=2, persistent_workers=False)
