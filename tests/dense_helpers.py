"""Tiny detection/segmentation batches and one training step, for the families' config tests.

Plain functions (not fixtures). mmdet/mmseg are imported inside, so importing this module needs
neither.
"""
import copy

import numpy as np
import torch


def build_from_config(path, scope, backbone_type, overrides=None):
    """Load a repository config, check its backbone type, drop the pretrained init, build it.

    ``overrides``: dotted keys merged into the model's copy of the config, e.g. fewer sampled
    RoIs (``{'model.train_cfg.rcnn.sampler.num': 32}``) to keep a CPU step short.
    Returns ``(cfg, model)`` with ``cfg`` as the file gives it.
    """
    import importlib

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == backbone_type
    build_cfg = copy.deepcopy(cfg)
    build_cfg.model.backbone.init_cfg = None
    build_cfg.merge_from_dict(overrides or {})
    if scope == 'mmseg':  # mmseg's heads use SyncBN, which needs a process group
        build_cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    return cfg, registry.build(build_cfg.model)


def det_samples(with_masks, size=128):
    """Two ``DetDataSample`` with 1 and 2 boxes (and box-shaped masks when ``with_masks``)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    shape = (size, size)
    samples = []
    for boxes in ([[10., 12., 70., 90.]], [[5., 30., 60., 120.], [64., 8., 120., 50.]]):
        inst = InstanceData(bboxes=torch.tensor(boxes), labels=torch.arange(len(boxes)) + 1)
        if with_masks:
            masks = np.zeros((len(boxes), size, size), dtype=np.uint8)
            for mask, (x1, y1, x2, y2) in zip(masks, boxes):
                mask[int(y1):int(y2), int(x1):int(x2)] = 1
            inst.masks = BitmapMasks(masks, size, size)
        meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                    scale_factor=(1., 1.))
        samples.append(DetDataSample(metainfo=meta, gt_instances=inst))
    return samples


def seg_samples(num=2, size=128, num_classes=150):
    """``num`` ``SegDataSample`` with random label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    shape = (size, size)
    return [SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape),
                          gt_sem_seg=PixelData(data=torch.randint(0, num_classes, (1, *shape))))
            for _ in range(num)]


def loss_backward(model, inputs, samples):
    """``model.loss`` in training mode, sum every loss term, backward; return the total."""
    model.train()
    losses = model.loss(inputs, samples)
    total = sum(v if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    total.backward()
    return total
