"""Every config under configs/ loads and builds; the recipes hold the published values."""
import copy
import functools
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmext.engine.config import detect_codebase, register_codebase

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO_ROOT, 'configs')
ALL_FILES = sorted(glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True))
# The configs people run (the _base_ files are covered through them).
# rtmdet/ and yolox/ (real-time detectors, strides 8/16/32): tests/test_realtime_configs.py
MODEL_CONFIGS = [f for f in ALL_FILES if f'{osp.sep}_base_{osp.sep}' not in f
                 and osp.basename(osp.dirname(f)) not in ('rtmdet', 'yolox')]
DET = [f for f in MODEL_CONFIGS if osp.basename(osp.dirname(f)) in ('mask_rcnn', 'retinanet')]
SEG = [f for f in MODEL_CONFIGS if osp.basename(osp.dirname(f)) == 'semfpn']
# Families on the shared recipes of configs/_base_/schedules/ as they are; others (e.g.
# EfficientFormer with its authors' lr) keep the shared schedule but set their own lr/wd.
SHARED_RECIPE_FAMILIES = ('shvit_',)


def _shared_recipe(path):
    return osp.basename(path).startswith(SHARED_RECIPE_FAMILIES)


def _id(path):
    return osp.relpath(path, CONFIG_DIR)


@functools.lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(path)


def load(path):
    return copy.deepcopy(_load(path))


def test_configs_found():
    assert len(DET) >= 8 and len(SEG) >= 4
    assert len(DET) + len(SEG) == len(MODEL_CONFIGS)


@pytest.mark.parametrize('path', ALL_FILES, ids=_id)
def test_no_imports_in_configs(path):
    with open(path) as f:
        text = f.read()
    assert not re.search(r'^\s*(import|from)\s+\S+', text, re.M), \
        'configs must not import (mmengine resolves mmdet::/mmseg:: bases)'


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=_id)
def test_config_builds(path):
    """The whole model builds from the config (every constructor runs) and the backbone's
    outputs match the neck's in_channels. Built on the meta device: shapes without the cost
    of initialising ~40 models' weights (test_detectors.py runs real ones)."""
    cfg = load(path)
    codebase = detect_codebase(cfg)
    assert codebase in ('mmdet', 'mmseg')
    assert cfg.custom_imports == dict(imports=['mmext'], allow_failed_imports=False)
    assert str(cfg.model.backbone.type).startswith('mmext.')
    register_codebase(codebase)
    if codebase == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(codebase), torch.device('meta'):
        model = MODELS.build(cfg.model)
        # neck in_channels agree with what the backbone really returns
        with torch.no_grad():
            feats = model.backbone.eval()(torch.empty(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(cfg.model.neck.in_channels)
    # the ImageNet checkpoint is the arch's canonical URL (the family manifest's), or
    # checkpoints/<family>_<arch>.pth for a model without released weights (EdgeViT)
    init_cfg = cfg.model.backbone.init_cfg
    assert init_cfg.type == 'Pretrained'
    arch = cfg.model.backbone.arch
    if isinstance(arch, str):
        from mmext.models.families import FAMILIES
        family = FAMILIES[str(cfg.model.backbone.type).split('.')[-1]]
        expected = family.archs[arch].weights or f'checkpoints/{family.model_name(arch)}.pth'
        assert init_cfg.checkpoint == expected


@pytest.mark.parametrize('path', DET, ids=_id)
def test_detection_recipe(path):
    cfg = load(path)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and 'momentum' not in opt
    if _shared_recipe(path):
        assert opt.lr == pytest.approx(1e-4) and opt.weight_decay == pytest.approx(0.05)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    warmup, step = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch is False and warmup.end == 500
    assert step.type == 'MultiStepLR' and list(step.milestones) == [8, 11]
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert tuple(resize.scale) == (1333, 800)
    assert 'SyncBN' not in str(cfg.model)


@pytest.mark.parametrize('path', SEG, ids=_id)
def test_semfpn_recipe(path):
    cfg = load(path)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and 'momentum' not in opt
    if _shared_recipe(path):
        assert opt.lr == pytest.approx(2e-4) and opt.weight_decay == pytest.approx(1e-4)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 40000
    (poly,) = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == pytest.approx(0.9) and poly.end == 40000
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=32)
    assert cfg.train_dataloader.batch_size == 4  # x 8 GPUs = 32
    assert tuple(cfg.crop_size) == (512, 512)
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.get('pretrained') is None


def test_other_packages_bases_are_looked_up_once(monkeypatch):
    """mmext's config loader asks mmengine for an ``mmdet::``/``mmseg::`` base once per process
    (mmengine reads the package's whole model index on each call): a config loaded again, and
    another on the same bases, read no metafile; the paths are mmengine's own."""
    from mmengine.config import Config
    from mmengine.config import utils as config_utils
    import mmext  # noqa: F401  (registers the loader)
    calls = []
    lookup = config_utils._get_cfg_metainfo
    monkeypatch.setattr(config_utils, '_get_cfg_metainfo',
                        lambda *a: calls.append(a) or lookup(*a))
    first = osp.join(CONFIG_DIR, 'retinanet', 'shvit_s1_fpn_1x_coco.py')
    Config.fromfile(first)  # (earlier tests of this process may have looked them up already)
    seen = len(calls)
    Config.fromfile(first)
    Config.fromfile(osp.join(CONFIG_DIR, 'retinanet', 'shvit_s2_fpn_1x_coco.py'))
    assert len(calls) == seen
    path, scope = Config._get_cfg_path('mmdet::_base_/datasets/coco_detection.py', first)
    assert scope == 'mmdet' and path == Config._get_cfg_path.__wrapped__(
        'mmdet::_base_/datasets/coco_detection.py', first)[0]
