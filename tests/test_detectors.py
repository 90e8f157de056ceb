"""One loss + backward step of a detector and a segmentor built from the real configs of every
family of the manifest (its smallest arch: RetinaNet and Semantic FPN; Mask R-CNN with SHViT),
fed by the real data pipeline on the generated data: every backbone and neck parameter gets a
gradient (as DistributedDataParallel needs). The recipes' values: each family's test file and
tests/test_configs.py."""
import glob
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from mmext.engine.config import register_codebase
from mmext.engine.launch import adapt_to_device
from mmext.models.families import FAMILIES

from .runtime_helpers import config_path, det_overrides, seg_overrides

CASES = [('mask_rcnn/shvit_s1_fpn_1x_coco.py', 'mmdet', 'mask_rcnn')]
for _f in FAMILIES.values():
    _name = _f.model_name(_f.smallest)
    CASES += [(f'retinanet/{_name}_fpn_1x_coco.py', 'mmdet', 'retinanet'),
              (f'semfpn/{_name}_fpn_40k_ade20k.py', 'mmseg', 'semfpn')]
    # the real-time detectors take 3 of the backbone's stages (SHViT: 2 + a stride-8 map)
    for _rel in sorted(glob.glob(config_path(f'rtmdet/{_name}_rtmdet_*.py'))
                       + glob.glob(config_path(f'yolox/{_name}_yolox_*.py'))):
        CASES.append((osp.relpath(_rel, config_path('.')), 'mmdet', 'single_stage'))


def _case_id(case):
    return case[0].split('_fpn')[0].split('_4xb')[0].split('_8xb')[0]


@pytest.mark.parametrize('rel, codebase, kind', CASES, ids=[_case_id(c) for c in CASES])
def test_loss_and_backward(rel, codebase, kind, coco_demo, ade_demo):
    torch.manual_seed(0)
    cfg = Config.fromfile(config_path(rel))
    if codebase == 'mmdet':
        if kind == 'single_stage':  # YOLOX wraps its training set in MultiImageMixDataset
            cfg.train_dataloader.dataset = dict(type='CocoDataset')  # and resizes batches by
            cfg.model.data_preprocessor.pop('batch_augments', None)  # the runner's iteration
        cfg.merge_from_dict(det_overrides(coco_demo, kind=kind, width=None))
        from mmdet.registry import DATASETS, MODELS
    else:
        cfg.merge_from_dict(seg_overrides(ade_demo, width=None))
        from mmseg.registry import DATASETS, MODELS
    register_codebase(codebase)
    adapt_to_device(cfg)  # SyncBN -> BN on a CPU-only machine
    with DefaultScope.overwrite_default_scope(codebase):
        model = MODELS.build(cfg.model)
        model.init_weights()
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    model.train()
    batch = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model(**batch, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    for part in ('backbone', 'neck'):
        named = [(n, p) for n, p in getattr(model, part).named_parameters() if p.requires_grad]
        unused = [n for n, p in named if p.grad is None]
        # DistributedDataParallel (find_unused_parameters=False, the default) fails on
        # parameters that take no part in the loss
        assert not unused, f'{part} parameters without gradient (would break DDP): {unused}'
        grads = [p.grad for _, p in named]
        assert sum(g.abs().sum().item() for g in grads) > 0
        assert all(torch.isfinite(g).all() for g in grads)
    if kind == 'mask_rcnn':
        assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(log_vars)
    elif kind in ('retinanet', 'single_stage'):
        assert {'loss_cls', 'loss_bbox'} <= set(log_vars)
    else:
        assert 'decode.loss_ce' in log_vars
