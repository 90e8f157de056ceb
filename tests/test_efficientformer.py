"""EfficientFormer (V1): what only V1 has (block layout, output norms, pooling, attention-bias
tables, deploy's fused ops), its checkpoint layouts and its detector recipes; the rest of the
backbone contract is tests/test_models_contract.py."""
import copy
import itertools
import re

import pytest
import torch
import torch.nn as nn

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.checkpoints import load_pretrained
from mmext.checkpoints.zoo import ZOO
from mmext.errors import CheckpointError, ConfigError
from mmext.models import EfficientFormer
from mmext.models.families import FAMILIES
from mmext.models.efficientformer import Attention
from tests.helpers import bicubic_reference, max_rel_error, randomize_norms

# (Paper params/MACs and channels of every arch, output sizes, out_indices, frozen_stages,
# norm_eval, with_cp, drop_path, deploy equality and checkpoints: tests/test_models_contract.py,
# for every family.) The arch dims of the family manifest; the tiny arch: Meta3D after two Meta4D
# blocks; TINY_ALL_VIT: a last stage of Meta3D blocks only.
DIMS = {arch: list(spec.dims) for arch, spec in FAMILIES['EfficientFormer'].archs.items()}
# The authors' block layout: blocks per stage, Meta3D (attention) blocks closing the last stage.
LAYOUT = {'l1': ([3, 2, 6, 4], 1), 'l3': ([4, 4, 12, 6], 4), 'l7': ([6, 6, 18, 8], 8)}
TINY = dict(embed_dims=[16, 24, 32, 48], depths=[1, 1, 1, 3], num_vit=1)
TINY_ALL_VIT = dict(embed_dims=[16, 24, 32, 48], depths=[1, 1, 1, 2], num_vit=2)


@torch.no_grad()
def randomize(model, seed=0):
    """Random norms/BN statistics, plus layer scales and attention biases far from their init
    (1e-5 and 0 would hide any mistake in the blocks they scale)."""
    randomize_norms(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if name.endswith(('.gamma', 'attention_biases')):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize('arch', sorted(LAYOUT))
def test_archs_block_layout(arch):
    depths, num_vit = LAYOUT[arch]
    assert EfficientFormer.arch_settings[arch]['embed_dims'] == DIMS[arch]
    with torch.device('meta'):  # the structure only
        model = EfficientFormer(arch)
    last = model.stages[3].blocks
    assert [len(s.blocks) for s in model.stages] == depths
    assert [type(b).__name__ for b in last[-num_vit:]] == ['Meta3D'] * num_vit
    assert all(type(b).__name__ == 'Meta4D' for b in last[:-num_vit])
    assert all(type(b).__name__ == 'Meta4D' for s in model.stages[:3] for b in s.blocks)


@pytest.mark.parametrize('arch, match', [(dict(TINY, num_vit=4), 'num_vit=4'),
                                         (dict(TINY, pool_size=4), 'pool_size')])
def test_efficientformer_arch_rules(arch, match):
    with pytest.raises(ConfigError, match=match):
        EfficientFormer(arch)


@pytest.fixture(scope='module')
def l1():
    """A randomly initialised EfficientFormer-L1 in eval mode (shared: building one is slow)."""
    torch.manual_seed(0)
    return randomize(EfficientFormer('l1')).eval()


# ----------------------------------------------------------------------------- shapes
def test_last_stage_of_attention_blocks_only():
    model = EfficientFormer(TINY_ALL_VIT).eval()
    assert [type(b).__name__ for b in model.stages[3].blocks] == ['Meta3D'] * 2
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 96 // s) for c, s in
                                              zip(TINY_ALL_VIT['embed_dims'], (4, 8, 16, 32))]


def test_out_norm_is_group_norm_on_outputs():
    model = randomize(EfficientFormer(TINY, out_indices=(1, 3), out_norm=True)).eval()
    plain = copy.deepcopy(model)
    plain.out_norms = nn.ModuleList([nn.Identity()] * 4)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        normed, raw = model(x), plain(x)
    assert isinstance(model.out_norms[1], nn.GroupNorm) and model.out_norms[1].num_groups == 1
    assert isinstance(model.out_norms[0], nn.Identity)  # not an output
    for i, (a, b) in zip((1, 3), zip(normed, raw)):
        assert torch.allclose(a, model.out_norms[i](b))
        assert not torch.allclose(a, b)


def test_pooling_mixer_averages_valid_pixels_only():
    from mmext.models.efficientformer import Pooling
    x = torch.arange(16.).view(1, 1, 4, 4)
    out = Pooling()(x)
    assert out[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4 - 0  # corner: 4 pixels, padding not counted
    assert out[0, 0, 1, 1] == sum([0, 1, 2, 4, 5, 6, 8, 9, 10]) / 9 - 5


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_out_norm_builds_from_downstream_registries(scope):
    """(Errors and plain registry builds of every family: tests/test_backbone_args.py.)"""
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    model = registry.build(dict(type='mmext.EfficientFormer', arch=TINY, out_indices=(1, 2),
                                out_norm=True))
    assert isinstance(model, EfficientFormer) and model.out_indices == (1, 2)
    assert model.out_channels == TINY['embed_dims'][1:3]
    assert isinstance(model.out_norms[2], nn.GroupNorm)


# ----------------------------------------------------------------------------- attention biases
def _authors_table_index(resolution):
    """The authors' 7x7 index: offsets (|dy|, |dx|) numbered in order of first appearance."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return torch.tensor(idxs).view(len(points), len(points))


def _expected_bias(table, size):
    """Bicubic resize of the (heads, 7, 7) offset map to ``size`` (written out independently of
    torch's kernel, tests.helpers.bicubic_reference), read per query/key pair."""
    heads = table.shape[0]
    grid = bicubic_reference(table.view(heads, 7, 7), size).float()
    h, w = size
    out = torch.empty(heads, h * w, h * w)
    for q, k in itertools.product(range(h * w), repeat=2):
        out[:, q, k] = grid[:, abs(q // w - k // w), abs(q % w - k % w)]
    return out


def _reference_attention(attn, x, bias):
    """Plain softmax attention, as the authors write it."""
    n, length, _ = x.shape
    q, k, v = attn.qkv(x).reshape(n, length, attn.num_heads, -1).permute(0, 2, 1, 3).split(
        [attn.key_dim, attn.key_dim, attn.value_dim], dim=3)
    scores = (q @ k.transpose(-2, -1)) * attn.key_dim**-0.5 + bias
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, -1)
    return attn.proj(out)


def test_bias_at_7x7_is_the_authors_table_exactly():
    attn = randomize(Attention(64)).eval()
    with torch.no_grad():
        bias = attn.attention_bias((7, 7))
    assert torch.equal(bias, attn.attention_biases[:, _authors_table_index(7)])


@pytest.mark.parametrize('size', [(3, 5), (9, 8)])
def test_bias_is_interpolated_table_for_other_grids(size):
    attn = randomize(Attention(64)).eval()
    with torch.no_grad():
        bias = attn.attention_bias(size)
        expected = _expected_bias(attn.attention_biases, size)
        x = torch.randn(2, size[0] * size[1], 64)
        out = attn(x, size)
        ref = _reference_attention(attn, x, expected)
    assert bias.shape == (8, size[0] * size[1], size[0] * size[1])
    assert torch.allclose(bias, expected, atol=1e-6)
    assert max_rel_error([ref], [out]) < 1e-5
    assert attn.attention_biases.shape == (8, 49)  # the parameter stays the 7x7 table


def test_bias_cache_reuses_and_invalidates():
    attn = randomize(Attention(64)).eval()
    with torch.no_grad():
        first = attn.attention_bias((4, 6))
        assert attn.attention_bias((4, 6)) is first  # cached
        other = attn.attention_bias((5, 5))
        assert other.shape[-1] == 25 and attn.attention_bias((4, 6)) is first
        attn.attention_biases.add_(1.0)  # e.g. an optimizer step or load_state_dict
        updated = attn.attention_bias((4, 6))
    assert updated is not first and torch.allclose(updated, first + 1.0, atol=1e-5)


def test_bias_gets_gradients_in_training():
    attn = randomize(Attention(64)).train()
    size = (4, 6)
    out = attn(torch.randn(2, 24, 64), size)
    assert attn.attention_bias(size) is not attn.attention_bias(size)  # not cached
    out.square().mean().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- training options
def test_frozen_stages_freeze_their_output_norms():
    """(The stem and stages: the contract test.) The output norms of frozen stages freeze too."""
    model = EfficientFormer(TINY, frozen_stages=1, out_norm=True)
    model.train()
    for module in [model.out_norms[0], model.out_norms[1]]:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    for module in [model.out_norms[2], model.out_norms[3]]:
        assert all(p.requires_grad for p in module.parameters()) and module.training


@pytest.mark.parametrize('size', [(224, 224), (97, 131)])  # the 7x7 table, an interpolated one
def test_switch_to_deploy_fuses_mlps_pooling_and_scales(size, monkeypatch):
    """Deploy equals eval, with every MLP's fc1 + GELU one fused op (no GELU module runs) and
    its fc2 + the residual one op."""
    model = randomize(EfficientFormer(TINY, out_norm=True)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model).switch_to_deploy()
        monkeypatch.setattr(nn.GELU, 'forward', lambda *a: pytest.fail('GELU module ran'))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out = fused(x)
    fused_ops = sum(e.count for e in prof.key_averages()
                    if e.key in ('mkldnn::_convolution_pointwise', 'mkldnn::_linear_pointwise'))
    blocks = sum(len(s.blocks) for s in fused.stages)
    maps = sum(s.num_conv_blocks for s in fused.stages)
    # fc1+GELU in every block, fc2+residual in every Meta4D block (the Meta3D tokens of an
    # NCHW map are strided: their residual is added after fc2, still correct)
    assert fused_ops >= blocks + maps, (fused_ops, blocks, maps)
    left = {type(m).__name__ for m in fused.modules()}
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    # pooling + residual + layer scale became one window-sum conv; scales folded away
    assert not left & {'Pooling', 'AvgPool2d', 'LayerScale'} and 'PoolingResidual' in left
    assert all(not m.elementwise_affine for m in fused.modules() if isinstance(m, nn.LayerNorm))
    assert max_rel_error(ref, out) < 1e-5


# ----------------------------------------------------------------------------- checkpoints
def to_official(model):
    """mmext -> the authors' keys (``patch_embed``, ``network.N.M``), written independently of
    mmext's mapping, with the classifier and the 7x7 index buffers the authors' files hold."""
    out = {}
    stem = {'0.conv': '0', '0.bn': '1', '2.conv': '3', '2.bn': '4'}
    for key, value in model.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'stem':
            new = ['patch_embed', stem['.'.join(parts[1:3])], *parts[3:]]
        else:
            stage, kind = int(parts[1]), parts[2]
            if kind == 'downsample':
                new = ['network', str(2 * stage - 1),
                       {'conv': 'proj', 'bn': 'norm'}[parts[3]], *parts[4:]]
            else:
                j = int(parts[3])
                if stage == 3 and j >= model.stages[3].num_conv_blocks:
                    j += 1  # the authors' Flat() sits before the first Meta3D block
                rest = parts[4:]
                if rest[0] in ('ls1', 'ls2'):
                    rest = [f'layer_scale_{rest[0][-1]}']
                elif rest[0] == 'mlp' and rest[2] in ('conv', 'bn'):
                    n = rest[1][-1]
                    rest = ['mlp', f'fc{n}' if rest[2] == 'conv' else f'norm{n}', *rest[3:]]
                new = ['network', str(2 * stage), str(j), *rest]
        out['.'.join(new)] = value
    dim = model.arch['embed_dims'][-1]
    for key in list(out):
        if key.endswith('token_mixer.attention_biases'):
            out[key.replace('attention_biases', 'attention_bias_idxs')] = _authors_table_index(7)
    out.update({'norm.weight': torch.ones(dim), 'norm.bias': torch.zeros(dim),
                'head.weight': torch.zeros(10, dim), 'head.bias': torch.zeros(10),
                'dist_head.weight': torch.zeros(10, dim), 'dist_head.bias': torch.zeros(10)})
    return out


def to_timm(model):
    """mmext -> timm's keys (``stem.conv1``, ``stages.i.blocks.j`` with the ``Flat`` slot)."""
    official = to_official(model)
    out = {}
    for key, value in official.items():
        key = re.sub(r'^patch_embed\.([0134])\.', lambda m: 'stem.' + {
            '0': 'conv1', '1': 'norm1', '3': 'conv2', '4': 'norm2'}[m[1]] + '.', key)
        key = re.sub(r'^network\.(\d+)\.(proj|norm)\.', lambda m: (
            f'stages.{(int(m[1]) + 1) // 2}.downsample.'
            f'{"conv" if m[2] == "proj" else "norm"}.'), key)
        key = re.sub(r'^network\.(\d+)\.', lambda m: f'stages.{int(m[1]) // 2}.blocks.', key)
        key = re.sub(r'layer_scale_(\d)$', r'ls\1.gamma', key)
        key = key.replace('dist_head.', 'head_dist.')
        out[key] = value
    return out


def _features(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _load(path, x, arch):
    model = EfficientFormer(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    return _features(model, x)


def _assert_same(a, b):
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


@pytest.fixture(scope='module')
def tiny_source():
    """A randomly initialised tiny EfficientFormer and its features on a fixed input."""
    torch.manual_seed(0)
    model = randomize(EfficientFormer(TINY)).eval()
    x = torch.randn(1, 3, 64, 96)
    return model, x, _features(model, x)


@pytest.mark.parametrize('layout, convert', [('official', to_official), ('timm', to_timm)])
def test_source_layouts_load_and_drop_classifier(l1, tmp_path, layout, convert):
    state = convert(l1)
    assert len(state) == 281  # as the authors' and timm's efficientformer_l1
    expected = {'official': ['patch_embed.4.running_var', 'network.5.proj.weight',
                             'network.6.4.token_mixer.attention_bias_idxs', 'dist_head.bias'],
                'timm': ['stem.norm2.running_var', 'stages.3.downsample.norm.weight',
                         'stages.3.blocks.4.ls1.gamma', 'head_dist.bias']}[layout]
    assert all(k in state for k in expected)
    path = tmp_path / f'efficientformer_l1_{layout}.pth'
    if layout == 'official':  # the authors' training files: 'model' plus other entries
        state = {'model': state, 'model_ema': {'network.0.0.layer_scale_1': torch.zeros(48)},
                 'optimizer': {'state': {}}, 'epoch': 300}
    torch.save(state, path)
    model = EfficientFormer('l1')
    report = load_pretrained(model, str(path))
    assert report.layout == layout
    assert report.missing == [] and report.unexpected == []  # classifier and indices dropped
    assert len(report.loaded) == len(model.state_dict())
    x = torch.randn(1, 3, 96, 160)
    _assert_same(_features(l1, x), _features(model, x))


@pytest.mark.parametrize('arch', [TINY, TINY_ALL_VIT])
@pytest.mark.parametrize('convert', [to_official, to_timm])
def test_source_layouts_with_any_flat_position(tmp_path, arch, convert):
    torch.manual_seed(0)
    model = randomize(EfficientFormer(arch)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model(x)
    path = tmp_path / 'tiny.pth'
    torch.save(convert(model), path)
    _assert_same(feats, _load(path, x, arch))  # through init_cfg


@pytest.mark.parametrize('wrap', [
    lambda s: s,
    lambda s: {'state_dict': s},
    lambda s: {'state_dict': {'module.' + k: v for k, v in s.items()}},
    lambda s: {'state_dict': {**{'backbone.' + k: v for k, v in s.items()},
                              'neck.lateral_convs.0.conv.weight': torch.zeros(1)}},
])
def test_mmext_layout_loads_wrapped(tiny_source, tmp_path, wrap):
    model, x, feats = tiny_source
    path = tmp_path / 'ckpt.pth'
    torch.save(wrap(model.state_dict()), path)
    _assert_same(feats, _load(path, x, TINY))


def test_official_layout_in_module_prefix(tiny_source, tmp_path):
    model, x, feats = tiny_source
    path = tmp_path / 'ddp.pth'
    torch.save({'model': {'module.' + k: v for k, v in to_official(model).items()}}, path)
    _assert_same(feats, _load(path, x, TINY))


def test_partial_checkpoint_reports_missing_keys(tiny_source, tmp_path):
    model, _, _ = tiny_source
    state = to_official(model)
    del state['network.6.3.token_mixer.attention_biases']  # 2 Meta4D, Flat, Meta3D
    state['network.8.0.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save({'model': state}, path)
    report = load_pretrained(EfficientFormer(TINY), str(path))
    assert report.missing == ['stages.3.blocks.2.token_mixer.attention_biases']
    assert report.unexpected == ['stages.4.blocks.0.extra.weight']


def test_checkpoint_of_another_arch_is_refused(l1, tmp_path):
    path = tmp_path / 'efficientformer_l1.pth'
    torch.save({'model': to_official(l1)}, path)
    with pytest.raises(CheckpointError, match="does not fit EfficientFormer arch 'custom'"):
        EfficientFormer(TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def test_missing_checkpoint_error_says_what_to_do(tmp_path):
    model = EfficientFormer(TINY, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'efficientformer_l1.pth')))
    with pytest.raises(CheckpointError, match='init_cfg=None'):
        model.init_weights()


# ----------------------------------------------------------------------------- recipes
# (Every config builds: tests/test_configs.py; a loss step of the RetinaNet and Semantic FPN
# models, gradients in every backbone parameter: tests/test_detectors.py.)
def _load_config(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'mmext.EfficientFormer'
    return cfg


def _check_config(cfg, arch='l1', first_stage=0):
    assert cfg.model.backbone.arch == arch and cfg.model.backbone.out_norm
    assert cfg.model.backbone.init_cfg.checkpoint == ZOO[f'efficientformer_{arch}'].url
    assert cfg.model.backbone.out_indices == tuple(range(first_stage, 4))
    assert cfg.model.neck.in_channels == DIMS[arch][first_stage:]
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == (
        2e-4, 1e-4)


@pytest.mark.parametrize('kind', ['mask_rcnn', 'retinanet'])
def test_detector_recipe(kind):
    cfg = _load_config(f'configs/{kind}/efficientformer_l1_fpn_1x_coco.py')
    # RetinaNet's FPN starts at stride 8: stages 1-3 (an unused stage-0 output norm would have
    # no gradient, which DistributedDataParallel refuses)
    _check_config(cfg, first_stage=1 if kind == 'retinanet' else 0)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == (
        'LinearLR', 1e-6, 500, False)
    assert steps.milestones == [8, 11] and cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    if kind == 'retinanet':
        assert (cfg.model.neck.start_level, cfg.model.neck.add_extra_convs,
                cfg.model.neck.num_outs) == (0, 'on_input', 5)


def test_semantic_fpn_recipe():
    cfg = _load_config('configs/semfpn/efficientformer_l1_fpn_40k_ade20k.py')
    _check_config(cfg)
    (poly, ) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9, 0.0, 40000)
    assert cfg.train_cfg.max_iters == 40000 and cfg.crop_size == (512, 512)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 32
