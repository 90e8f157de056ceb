"""The real-time detector configs (configs/rtmdet, configs/yolox): one of each per backbone,
every one builds, its widths are mmdet's own, its pyramid is at strides 8/16/32, and the
pretrained-backbone recipe (AdamW, 100 epochs, EMA, final pipeline switch) holds."""
import copy
import functools
import glob
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmext.engine.config import register_codebase
from mmext.models.families import FAMILIES, family_by_prefix, model_names

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO_ROOT, 'configs')
DETECTORS = ('rtmdet', 'yolox')
MODELS = tuple(model_names())  # every arch of every family of the manifest
# The mmdet config that defines each width (its neck/head channels and CSP blocks).
MMDET_WIDTH = {
    'rtmdet': 'rtmdet/rtmdet_{}_8xb32-300e_coco.py',
    'yolox': 'yolox/yolox_{}_8xb8-300e_coco.py',
}
NAME_RE = re.compile(r'^(?P<model>.+)_(?P<det>rtmdet|yolox)_(?P<width>tiny|s|m)_.*coco\.py$')
ODD_SIZE = (97, 131)
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'rtmdet', '*.py')) +
                 glob.glob(osp.join(CONFIG_DIR, 'yolox', '*.py')))


def _id(path):
    return osp.relpath(path, CONFIG_DIR)


def parse(path):
    m = NAME_RE.match(osp.basename(path))
    assert m, f'{_id(path)}: expected <model>_<rtmdet|yolox>_<tiny|s|m>_..._coco.py'
    return m['model'], m['det'], m['width']


@functools.lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(path)


def load(path):
    return copy.deepcopy(_load(path))


def mmdet_config(rel):
    """mmdet's own config (what ``mmdet::<rel>`` names in a ``_base_``)."""
    import mmdet
    return _load(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', rel))


def build(cfg, device='meta'):
    register_codebase('mmdet')
    from mmdet.registry import MODELS as DET_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device(device):
        return DET_MODELS.build(cfg.model)


def test_one_config_per_model_and_detector():
    found = {}
    for path in CONFIGS:
        model, det, _ = parse(path)
        assert osp.basename(osp.dirname(path)) == det
        found.setdefault((model, det), []).append(_id(path))
    assert sorted(found) == sorted((m, d) for m in MODELS for d in DETECTORS), found
    assert all(len(v) == 1 for v in found.values()), found


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_config_builds_with_mmdet_widths(path):
    """The detector builds (meta device: shapes without the cost of weights), the backbone
    returns exactly the neck's in_channels at strides 8/16/32 of an odd-sized image
    (ceil(H/s) x ceil(W/s)), and neck/head widths are mmdet's for the width in the file name."""
    model_name, det, width = parse(path)
    cfg = load(path)
    assert cfg.custom_imports == dict(imports=['mmext'], allow_failed_imports=False)
    assert cfg.model.type == {'rtmdet': 'RTMDet', 'yolox': 'YOLOX'}[det]
    family, arch = model_name.rsplit('_', 1)
    assert cfg.model.backbone.type == 'mmext.' + family_by_prefix(family).name
    assert cfg.model.backbone.arch == arch

    ref = mmdet_config(MMDET_WIDTH[det].format(width)).model
    for key in ('out_channels', 'num_csp_blocks'):
        assert cfg.model.neck[key] == ref.neck[key], key
    for key in ('in_channels', 'feat_channels', 'exp_on_reg'):
        if key in ref.bbox_head:
            assert cfg.model.bbox_head[key] == ref.bbox_head[key], key

    model = build(cfg)
    h, w = ODD_SIZE
    with torch.no_grad():
        feats = model.backbone.eval()(torch.empty(1, 3, h, w, device='meta'))
    assert [f.shape[1] for f in feats] == list(cfg.model.neck.in_channels)
    # the neck gets strides 8/16/32, the levels the head's priors are laid out for
    assert [tuple(f.shape[2:]) for f in feats] == [
        (math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32)]
    strides = [s[0] if isinstance(s, (tuple, list)) else s
               for s in model.bbox_head.prior_generator.strides]
    assert strides == [8, 16, 32]


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_pretrained_init(path):
    """ImageNet init from the canonical source of each arch (the manifest's weights URL), or
    checkpoints/<model>.pth for an arch without released weights; no download here (the loader
    and its URLs are tested in test_checkpoints.py)."""
    model_name, _, _ = parse(path)
    family, arch = model_name.rsplit('_', 1)
    init_cfg = load(path).model.backbone.init_cfg
    assert init_cfg.type == 'Pretrained'
    url = family_by_prefix(family).archs[arch].weights
    assert init_cfg.checkpoint == (url or f'checkpoints/{model_name}.pth')


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_pretrained_backbone_recipe(path):
    _, det, _ = parse(path)
    cfg = load(path)
    pre = cfg.model.data_preprocessor
    # ImageNet RGB statistics, as the backbones were trained
    assert pre.bgr_to_rgb is True
    assert list(pre.mean) == [123.675, 116.28, 103.53]
    assert list(pre.std) == [58.395, 57.12, 57.375]
    assert pre.pad_size_divisor == 32
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.weight_decay == pytest.approx(0.05)
    assert 'momentum' not in opt and 'nesterov' not in opt
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == 0 and paramwise.bias_decay_mult == 0
    assert paramwise.custom_keys['attention_biases'].decay_mult == 0
    assert cfg.train_cfg.max_epochs == 100
    hooks = {h.type: h for h in cfg.custom_hooks}
    ema = hooks['EMAHook']
    assert ema.ema_type == 'ExpMomentumEMA' and ema.update_buffers is True
    if det == 'rtmdet':
        # 1e-3 for 4 GPUs x 32 (mmdet's rtmdet_l_{convnext,swin}_b_4xb32-100e recipes)
        assert opt.lr == pytest.approx(1e-3)
        assert cfg.auto_scale_lr.base_batch_size == 128 == 4 * cfg.train_dataloader.batch_size
        assert ema.momentum == pytest.approx(2e-4)
        switch = hooks['PipelineSwitchHook']
        assert switch.switch_epoch == 90
        assert cfg.train_cfg.dynamic_intervals == [(90, 1)]
        stage1 = [t.type for t in cfg.train_dataloader.dataset.pipeline]
        stage2 = [t.type for t in switch.switch_pipeline]
        assert 'CachedMosaic' in stage1 and 'CachedMosaic' not in stage2
        assert 'CachedMixUp' not in stage2
    else:
        # RTMDet's pretrained-backbone lr per image at YOLOX's 8 GPUs x 8
        assert opt.lr == pytest.approx(1e-3 * 64 / 128)
        assert cfg.auto_scale_lr.base_batch_size == 64 == 8 * cfg.train_dataloader.batch_size
        assert ema.momentum == pytest.approx(1e-4)
        assert hooks['YOLOXModeSwitchHook'].num_last_epochs == 10
        assert 'SyncNormHook' in hooks
        warmup, cosine, constant = cfg.param_scheduler
        assert cosine.end == constant.begin == 90 and constant.end == 100


# The smallest arch of each family, with each detector: real weights, real forward.
SMALLEST = tuple(f.model_name(f.smallest) for f in FAMILIES.values())


@pytest.mark.slow  # builds and runs real detectors (~5-25 s each on a shared 2-core machine)
@pytest.mark.parametrize('path', [p for p in CONFIGS if parse(p)[0] in SMALLEST], ids=_id)
def test_pyramid_strides_at_odd_size(path):
    """Real weights, real forward at 97x131: the backbone hands the neck maps at strides
    8/16/32 (ceil(H/s) x ceil(W/s)); through the detector's own data preprocessor (padding to
    32) the head gets the three levels at padded/s, and predict runs to boxes."""
    cfg = load(path)
    cfg.model.backbone.init_cfg = None
    # untrained scores all pass RTMDet's 0.001 threshold: keep NMS to its top 1000 candidates
    cfg.model.test_cfg.nms_pre = 1000
    model = build(cfg, device='cpu').eval()
    h, w = ODD_SIZE
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, h, w))
        assert [tuple(f.shape[2:]) for f in feats] == [
            (math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32)]

        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        data = model.data_preprocessor(
            dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
                 data_samples=[sample]), training=False)
        hp, wp = data['inputs'].shape[2:]
        assert (hp, wp) == (128, 160)
        head_in = model.extract_feat(data['inputs'])
        assert [tuple(f.shape[2:]) for f in head_in] == [(hp // s, wp // s) for s in (8, 16, 32)]
        assert all(f.shape[1] == cfg.model.bbox_head.in_channels for f in head_in)
        results = model.predict(data['inputs'], data['data_samples'])
    assert results[0].pred_instances.bboxes.shape[-1] == 4


@pytest.mark.parametrize('det', DETECTORS)
def test_metafile(det):
    """configs/<det>/metafile.yml lists every config once, with its width and the backbone
    weights its init_cfg names (none for EdgeViT, whose checkpoint is local)."""
    import yaml
    with open(osp.join(CONFIG_DIR, det, 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    listed = {}
    for entry in meta['Models']:
        path = osp.join(REPO_ROOT, entry['Config'])
        assert entry['Name'] == osp.basename(path)[:-3]
        listed[path] = entry
        _, _, width = parse(path)
        assert entry['Metadata']['Detector Width'] == width
        assert entry['Metadata']['Epochs'] == load(path).train_cfg.max_epochs
        ckpt = load(path).model.backbone.init_cfg.checkpoint
        assert 'Weights' not in entry  # no trained detector weights (mim would load them whole)
        assert entry['Metadata'].get('Pretrained Backbone') == (
            ckpt if ckpt.startswith('https://') else None)
    assert sorted(listed) == [p for p in CONFIGS if osp.basename(osp.dirname(p)) == det]
