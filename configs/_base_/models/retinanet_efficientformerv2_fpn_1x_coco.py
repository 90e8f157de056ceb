# RetinaNet + EfficientFormerV2 + FPN, 1x schedule, COCO, with the authors' V2 detection
# optimisation: their EfficientFormer recipe (see the base: AdamW lr 2e-4, warm-up 500 iterations
# from 1e-6 x lr, x0.1 at epochs 8 and 11, 16 images per iteration) with weight decay 0.05.
# mmdet's standard RetinaNet FPN: levels from stride 8 (start_level=1), the two extra levels by
# stride-2 convs on the last backbone map (add_extra_convs='on_input'), strides 8..128.
_base_ = './retinanet_efficientformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmext.EfficientFormerV2',
        arch='s0',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,  # as the authors (see mask_rcnn_efficientformerv2_fpn_1x_coco.py)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors')),  # noqa: E501
    neck=dict(in_channels=[32, 48, 96, 176], start_level=1))  # (V1's base takes stages 1-3)

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
