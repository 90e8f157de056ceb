"""EfficientFormerV2: what only V2 has (attention layout and per-block FFN widths, the authors'
attention and bias tables, talking heads and fused ops in deploy), its checkpoint layouts and
configs; the rest of the backbone contract is tests/test_models_contract.py."""
import copy
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.checkpoints import load_pretrained
from mmext.checkpoints.zoo import ZOO
from mmext.errors import CheckpointError, ConfigError
from mmext.models import EfficientFormerV2
from mmext.models.families import FAMILIES
from mmext.models.efficientformer_v2 import Attention4D, Attention4DDownsample, ConvFFN
from tests.helpers import bicubic_reference, max_rel_error, randomize_norms, randomize_tables

# (Paper params/MACs and channels of every arch, output sizes, out_indices, frozen_stages,
# norm_eval, with_cp, drop_path, deploy equality, batch 0 and checkpoints:
# tests/test_models_contract.py, for every family.)
DIMS = {arch: list(spec.dims) for arch, spec in FAMILIES['EfficientFormerV2'].archs.items()}
# A narrow arch with every kind of block, for the large input sizes.
TINY = dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 2, 2], num_vit=1)


@torch.no_grad()
def randomize(model, seed=0):
    """Random BN statistics/affines, attention biases and layer scales (1e-5 would hide the
    attention and FFN branches), and queries/keys scaled so that attention scores are O(1) and
    not drowned by the biases (otherwise the softmax would hardly depend on q and k)."""
    randomize_tables(randomize_norms(model, seed), seed)
    for m in model.modules():
        if isinstance(m, (Attention4D, Attention4DDownsample)):
            q_bn = m.q.bn if isinstance(m, Attention4D) else m.q.proj.bn
            for bn in (q_bn, m.k.bn):
                bn.weight.mul_(6.0)
                bn.bias.mul_(6.0)
    return model


def features(model, x):
    with torch.no_grad():
        return model.eval()(x)


# ----------------------------------------------------------------------------- architecture
def test_attention_layout_per_arch():
    """Attention blocks close stages 3 and 4; stride attention in 3; attention downsampling
    into 4; per-block FFN widths as in the authors' tables."""
    model = EfficientFormerV2('s1')
    for i, stage in enumerate(model.stages):
        attn = [b.token_mixer is not None for b in stage.blocks]
        n = len(attn) - 2 if i >= 2 else len(attn)
        assert attn == [False] * n + [True] * (len(attn) - n)
        if i >= 2:
            assert all(b.token_mixer.stride == (2 if i == 2 else 1) for b in stage.blocks[n:])
    assert model.stages[3].downsample.attn is not None
    assert all(s.downsample.attn is None for s in model.stages[1:3])
    hidden = [b.mlp.fc1.conv.out_channels // 120 for b in model.stages[2].blocks]
    assert hidden == [4, 4, 3, 3, 3, 3, 4, 4, 4]


def test_custom_arch_dict():
    model = EfficientFormerV2(dict(TINY, mlp_ratios=[2, 2, [3, 4], 2]))
    assert [b.mlp.fc1.conv.out_channels for b in model.stages[2].blocks] == [96, 128]
    outs = features(model, torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == TINY['embed_dims']


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch=dict(TINY, depths=[1, 1, 1])), '4 entries'),
    (dict(arch=dict(TINY, num_vit=3)), 'num_vit=3'),
    (dict(arch=dict(TINY, mlp_ratios=[4, 4, [4], 4])), r'mlp_ratios\[2\] has 1 entries'),
    (dict(arch=dict(TINY, mlp_ratios=[4] * 5)), 'mlp_ratios needs 4 entries'),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EfficientFormerV2(**kwargs)


# ----------------------------------------------------------------------------- attention biases
def _authors_bias(table, resolution, q_resolution, step):
    """The authors' construction: offsets numbered by first appearance, queries every ``step``."""
    offsets, idxs = {}, []
    keys = list(itertools.product(range(resolution), range(resolution)))
    for qy, qx in itertools.product(range(q_resolution), range(q_resolution)):
        for ky, kx in keys:
            idxs.append(offsets.setdefault((abs(qy * step - ky), abs(qx * step - kx)),
                                           len(offsets)))
    return table[:, torch.tensor(idxs).view(q_resolution**2, resolution**2)]


def test_biases_at_224_are_the_authors_tables():
    model = randomize(EfficientFormerV2('s0')).eval()
    with torch.no_grad():
        for attn in (model.stages[2].blocks[-1].token_mixer,
                     model.stages[3].blocks[-1].token_mixer):
            assert attn.resolution == 7
            assert torch.equal(attn.attention_bias((7, 7)),
                               _authors_bias(attn.attention_biases, 7, 7, 1))
        down = model.stages[3].downsample.attn
        assert down.resolution == 14
        assert torch.equal(down.attention_bias((7, 7), (14, 14), q_stride=2),
                           _authors_bias(down.attention_biases, 14, 7, 2))


def _authors_attention(m, x):
    """The authors' Attention4D / Attention4DDownsample forward, written out at 224's grids."""
    n = x.shape[0]
    down = isinstance(m, Attention4DDownsample)
    if down:
        q = m.q.proj(m.q.local(x) + nn.AvgPool2d(1, 2, 0)(x))
    else:
        x = m.stride_conv(x) if m.stride_conv is not None else x
        q = m.q(x)
    hq, wq = q.shape[-2:]
    q = q.flatten(2).reshape(n, 8, -1, hq * wq).permute(0, 1, 3, 2)
    k = m.k(x).flatten(2).reshape(n, 8, -1, x.shape[2] * x.shape[3])
    v = m.v(x)
    v_local = m.v_local(v)
    v = v.flatten(2).reshape(n, 8, -1, x.shape[2] * x.shape[3]).permute(0, 1, 3, 2)
    key_dim = 16 if down else 32
    attn = (q @ k) * key_dim**-0.5 + _authors_bias(m.attention_biases, x.shape[2], hq,
                                                   2 if down else 1)
    if down:
        attn = attn.softmax(dim=-1)
    else:
        attn = m.talking_head2(m.talking_head1(attn).softmax(dim=-1))
    out = (attn @ v).transpose(2, 3).reshape(n, -1, hq, wq) + v_local
    if not down and m.stride_conv is not None:
        out = nn.Upsample(scale_factor=2, mode='bilinear')(out)
    return m.proj(F.gelu(out))


@pytest.mark.parametrize('where, size', [('stride', 14), ('plain', 7), ('down', 14)])
def test_attention_equals_the_authors_formula_at_224(where, size):
    model = randomize(EfficientFormerV2('s0')).eval()
    m = {'stride': model.stages[2].blocks[-1].token_mixer,
         'plain': model.stages[3].blocks[-1].token_mixer,
         'down': model.stages[3].downsample.attn}[where]
    x = torch.randn(2, m.v.conv.in_channels, size, size)
    with torch.no_grad():
        ref, out = _authors_attention(m, x), m(x)
    assert max_rel_error([ref], [out]) < 1e-5


@pytest.mark.parametrize('q_size, k_size, stride', [((5, 9), (5, 9), 1), ((3, 5), (5, 9), 2),
                                                     ((13, 20), (25, 40), 2)])
def test_biases_on_other_grids_are_the_bicubic_table(q_size, k_size, stride):
    model = randomize(EfficientFormerV2('s0')).eval()
    stage = model.stages[3]
    attn = stage.downsample.attn if stride == 2 else stage.blocks[-1].token_mixer
    r = attn.resolution
    with torch.no_grad():
        bias = attn.attention_bias(q_size, k_size, q_stride=stride)
        # written out independently of torch's bicubic kernel
        table = bicubic_reference(attn.attention_biases.view(8, r, r), k_size).float()
    assert bias.shape == (8, q_size[0] * q_size[1], k_size[0] * k_size[1])
    for (qy, qx), (ky, kx) in [((0, 0), (0, 0)), ((q_size[0] - 1, 1), (2, k_size[1] - 1)),
                               ((1, q_size[1] - 1), (k_size[0] - 1, 0))]:
        expected = table[:, abs(qy * stride - ky), abs(qx * stride - kx)]
        assert torch.allclose(bias[:, qy * q_size[1] + qx, ky * k_size[1] + kx], expected,
                              atol=1e-5)


def test_bias_cached_in_inference_and_recomputed_for_training():
    attn = randomize(EfficientFormerV2('s0')).stages[3].blocks[-1].token_mixer
    attn.eval()
    with torch.no_grad():
        first = attn.attention_bias((6, 10))
        assert attn.attention_bias((6, 10)) is first
        attn.attention_biases.add_(1.0)  # e.g. loading other weights
        assert torch.allclose(attn.attention_bias((6, 10)), first + 1.0, atol=1e-5)
    attn.train()
    bias = attn.attention_bias((6, 10))
    bias.sum().backward()
    assert attn.attention_biases.grad is not None


def test_stride_attention_on_odd_grid_equals_padding_and_cropping():
    attn = randomize(Attention4D(16, resolution=7, stride=2)).eval()
    x = torch.randn(2, 16, 9, 13)
    with torch.no_grad():
        out = attn(x)
        padded = attn(F.pad(x, (0, 1, 0, 1)))[..., :9, :13]
    assert out.shape == x.shape
    assert torch.allclose(out, padded, atol=1e-6)


# ----------------------------------------------------------------------------- deploy
@pytest.mark.parametrize('stride, size', [(1, (7, 9)), (2, (9, 13)), (2, (12, 10))])
def test_deploy_talking_heads_as_matmuls(stride, size, monkeypatch):
    """Deploy runs both talking heads as batched matmuls (no conv call), talking_head1 folded
    into the cached bias and talking_head2's bias after the value product: equal to eval with
    talking heads and biases far from identity/zero, and a change of talking_head1 after
    deploying (e.g. load_state_dict) is not hidden by the bias cache."""
    torch.manual_seed(0)
    attn = randomize(Attention4D(16, resolution=7, stride=stride)).eval()
    with torch.no_grad():
        for th in (attn.talking_head1, attn.talking_head2):
            th.weight.normal_(std=0.5)
            th.bias.normal_()
    x = torch.randn(2, 16, *size)
    fused = copy.deepcopy(attn)
    fused.switch_to_deploy()
    with torch.no_grad():
        ref = attn(x)
        calls = []
        for th in (fused.talking_head1, fused.talking_head2):
            monkeypatch.setattr(th, 'forward', lambda *a: calls.append(a) or a[0])
        assert max_rel_error(ref, fused(x)) < 1e-5
        assert not calls
        new = {k: torch.randn(v.shape) for k, v in attn.state_dict().items()
               if k.startswith('talking_head1')}
        attn.load_state_dict(new, strict=False)
        fused.load_state_dict(new, strict=False)
        assert max_rel_error(attn(x), fused(x)) < 1e-5


# ----------------------------------------------------------------------------- checkpoints
def _to_official(state):
    """mmext keys -> the authors' (hand-written inverse of mmext.checkpoints.efficientformer_v2)."""
    rest_rules = [('mlp.fc1.conv.', 'mlp.fc1.'), ('mlp.fc1.bn.', 'mlp.norm1.'),
                  ('mlp.mid.conv.', 'mlp.mid.'), ('mlp.mid.bn.', 'mlp.mid_norm.'),
                  ('mlp.fc2.conv.', 'mlp.fc2.'), ('mlp.fc2.bn.', 'mlp.norm2.'),
                  ('ls1.gamma', 'layer_scale_1'), ('ls2.gamma', 'layer_scale_2'),
                  ('q.local.', 'q.local.0.'), ('q.proj.conv.', 'q.proj.0.'),
                  ('q.proj.bn.', 'q.proj.1.'), ('proj.conv.', 'proj.1.'), ('proj.bn.', 'proj.2.'),
                  ('.conv.', '.0.'), ('.bn.', '.1.')]
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'stem':
            index = {'conv1': 0, 'conv2': 3}[parts[1]] + (parts[2] == 'bn')
            out[f'patch_embed.{index}.' + '.'.join(parts[3:])] = value
            continue
        i = int(parts[1])
        if parts[2] == 'downsample' and parts[3] == 'conv':
            name = {'conv': 'proj' if i < 3 else 'conv', 'bn': 'norm' if i < 3 else 'bn'}[parts[4]]
            out[f'network.{2 * i - 1}.{name}.' + '.'.join(parts[5:])] = value
            continue
        prefix = (f'network.{2 * i}.{parts[3]}' if parts[2] == 'blocks'
                  else f'network.{2 * i - 1}')
        rest = '.'.join(parts[4:] if parts[2] == 'blocks' else parts[3:])
        for old, new in rest_rules:
            rest = rest.replace(old, new)
        if rest.startswith('layer_scale'):
            value = value.view(-1, 1, 1)
        out[f'{prefix}.{rest}'] = value
        if rest.endswith('attention_biases'):  # the authors' index buffers, built for 224
            n = value.shape[1]
            out[f'{prefix}.{rest[:-len("biases")]}bias_idxs'] = torch.zeros(n, n, dtype=torch.long)
    return out


def _classifier(dim, dist_key):
    return {'norm.weight': torch.ones(dim), 'norm.bias': torch.zeros(dim),
            'norm.running_mean': torch.zeros(dim), 'norm.running_var': torch.ones(dim),
            'head.weight': torch.zeros(1000, dim), 'head.bias': torch.zeros(1000),
            f'{dist_key}.weight': torch.zeros(1000, dim), f'{dist_key}.bias': torch.zeros(1000)}


@pytest.fixture(scope='module')
def source():
    model = randomize(EfficientFormerV2('s0'), seed=3).eval()
    x = torch.randn(1, 3, 96, 128)
    return model, x, features(model, x)


def _official_file(state):
    sd = dict(_to_official(state), **_classifier(176, 'dist_head'))
    return {'model': sd, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
            'model_ema': {k: torch.zeros_like(v) for k, v in sd.items()}, 'epoch': 449}


def _timm_file(state):
    sd = dict(state, **_classifier(176, 'head_dist'))
    for key, value in state.items():  # older timm files keep the index buffers
        if key.endswith('attention_biases'):
            sd[key.replace('biases', 'bias_idxs')] = torch.zeros(9, 9, dtype=torch.long)
    return sd


@pytest.mark.parametrize('layout, make', [
    ('official', _official_file),
    ('mmext/timm', _timm_file),
    ('mmext/timm', lambda s: {'state_dict': s, 'meta': {'family': 'EfficientFormerV2'}}),
    ('mmext/timm', lambda s: {'state_dict': {f'module.{k}': v for k, v in s.items()}}),
    ('mmext/timm', lambda s: {'state_dict': {f'backbone.{k}': v for k, v in s.items()},
                              'neck.lateral.weight': torch.zeros(1)}),
])
def test_pretrained_loading_in_every_layout(tmp_path, source, layout, make):
    model, x, ref = source
    path = tmp_path / 'ckpt.pth'
    torch.save(make(model.state_dict()), path)
    fresh = EfficientFormerV2('s0')
    report = load_pretrained(fresh, str(path))
    assert report.layout == layout
    assert report.missing == [] and report.unexpected == []  # heads/indices dropped silently
    assert max_rel_error(ref, features(fresh, x)) == 0


def test_pretrained_through_init_cfg(tmp_path, source):
    model, x, ref = source
    path = tmp_path / 'official.pth'
    torch.save(_official_file(model.state_dict()), path)
    fresh = EfficientFormerV2('s0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    fresh.init_weights()
    assert max_rel_error(ref, features(fresh, x)) == 0
    # Loading replaced the tables: the inference cache does not serve the old biases.
    again = EfficientFormerV2('s0')
    features(again, x)
    again.load_state_dict(model.state_dict())
    assert max_rel_error(ref, features(again, x)) == 0


def test_keys_that_do_not_fit_are_reported(tmp_path, source):
    model, _, _ = source
    state = dict(model.state_dict())
    del state['stages.1.blocks.0.ls2.gamma']
    state['stages.1.blocks.0.extra.weight'] = torch.zeros(3)
    path = tmp_path / 'partial.pth'
    torch.save(state, path)
    report = load_pretrained(EfficientFormerV2('s0'), str(path))
    assert report.missing == ['stages.1.blocks.0.ls2.gamma']
    assert report.unexpected == ['stages.1.blocks.0.extra.weight']


def test_checkpoint_of_another_arch_raises(tmp_path):
    path = tmp_path / 's1.pth'
    torch.save({'model': _to_official(EfficientFormerV2('s1').state_dict())}, path)
    with pytest.raises(CheckpointError, match="does not fit EfficientFormerV2 arch 's0'"):
        load_pretrained(EfficientFormerV2('s0'), str(path))


# ----------------------------------------------------------------------------- configs
KINDS = {  # directory: (model base, file suffix)
    'mask_rcnn': ('mask_rcnn_efficientformerv2_fpn_1x_coco', 'fpn_1x_coco'),
    'retinanet': ('retinanet_efficientformerv2_fpn_1x_coco', 'fpn_1x_coco'),
    'semfpn': ('semfpn_efficientformerv2_fpn_40k_ade20k', 'fpn_40k_ade20k'),
}


@pytest.mark.parametrize('kind', sorted(KINDS))
@pytest.mark.parametrize('arch', sorted(DIMS))
def test_config_variants_set_arch_checkpoint_and_channels(kind, arch):
    """Each variant inherits its model base and sets the arch, its checkpoint and the FPN's
    input channels (read without resolving the mmdet/mmseg bases; the S0 files are resolved in
    full below, and tests/test_configs.py builds every config)."""
    base, suffix = KINDS[kind]
    with open(f'configs/{kind}/efficientformerv2_{arch}_{suffix}.py') as f:
        variant = {}
        exec(f.read(), {}, variant)
    assert variant['_base_'] == f'../_base_/models/{base}.py'
    backbone = variant['model']['backbone']
    assert backbone['arch'] == arch
    assert backbone['init_cfg'] == dict(checkpoint=ZOO[f'efficientformerv2_{arch}'].url)
    assert ZOO[f'efficientformerv2_{arch}'].url == FAMILIES['EfficientFormerV2'].archs[arch].weights
    assert variant['model']['neck']['in_channels'] == DIMS[arch]


def _check_recipe(cfg, kind):
    assert cfg.model.backbone.norm_eval is True
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=ZOO['efficientformerv2_s0'].url)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.lr == 2e-4
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # the authors decay every parameter
    if kind == 'semfpn':
        assert optimizer.weight_decay == 1e-4 and cfg.train_cfg.max_iters == 40000
        (poly, ) = cfg.param_scheduler
        assert (poly.type, poly.power, poly.end, poly.eta_min) == ('PolyLR', 0.9, 40000, 1e-6)
        assert cfg.train_dataloader.batch_size * 8 == 32  # 32 images per iteration on 8 GPUs
        assert cfg.crop_size == (512, 512)
    else:
        assert optimizer.weight_decay == 0.05 and cfg.train_cfg.max_epochs == 12
        warmup, steps = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == (
            'LinearLR', 1e-6, 500, False)
        assert (steps.milestones, steps.gamma) == ([8, 11], 0.1)
        assert cfg.train_dataloader.batch_size * 8 == 16  # 16 images per iteration on 8 GPUs
    assert cfg.model.neck.type == 'FPN' and cfg.model.neck.in_channels == DIMS['s0']
    if kind == 'retinanet':
        assert (cfg.model.neck.start_level, cfg.model.neck.add_extra_convs) == (1, 'on_input')


def _load_config(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'mmext.EfficientFormerV2'
    return cfg


# (Every config builds: tests/test_configs.py; a loss step of the RetinaNet and Semantic FPN
# models, gradients in every backbone parameter: tests/test_detectors.py.)
@pytest.mark.parametrize('kind, path', [
    ('mask_rcnn', 'configs/mask_rcnn/efficientformerv2_s0_fpn_1x_coco.py'),
    ('retinanet', 'configs/retinanet/efficientformerv2_s0_fpn_1x_coco.py'),
    ('semfpn', 'configs/semfpn/efficientformerv2_s0_fpn_40k_ade20k.py'),
])
def test_recipe(kind, path):
    _check_recipe(_load_config(path), kind)


# ----------------------------------------------------------------------------- fused conv+GELU
@pytest.mark.parametrize('k, stride, groups, size', [(1, 1, 1, (9, 11)), (3, 1, 24, (9, 11)),
                                                     (3, 2, 1, (10, 7))])
def test_conv_gelu_equals_conv_then_gelu(k, stride, groups, size):
    from mmext.models.onednn import conv_gelu
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 24 if groups > 1 else 40, k, stride, k // 2, groups=groups).eval()
    x = torch.randn(2, 24, *size)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.contiguous(memory_format=fmt)
        with torch.no_grad():
            torch.testing.assert_close(conv_gelu(conv, xf), F.gelu(conv(xf)), rtol=1e-5,
                                       atol=1e-6)
    out = conv_gelu(conv, x.requires_grad_())  # with grad: the plain ops, gradients flow
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_deploy_ffn_fuses_its_gelus(monkeypatch):
    """In deploy the FFN's two conv+GELU pairs run as conv_gelu (its act module is not called)
    and give the eval outputs."""
    ffn = randomize(ConvFFN(16, 48)).eval()
    x = torch.randn(2, 16, 9, 7)
    fused = copy.deepcopy(ffn)
    for m in reversed(list(fused.modules())):
        m.switch_to_deploy() if hasattr(m, 'switch_to_deploy') else None
    monkeypatch.setattr(fused.act, 'forward', lambda *a: pytest.fail('GELU module ran'))
    with torch.no_grad():
        assert max_rel_error(ffn(x), fused(x)) < 1e-5
    model = randomize(EfficientFormerV2('s0')).eval()  # and the stem's two pairs
    stem = copy.deepcopy(model).switch_to_deploy().stem
    for act in (stem.act1, stem.act2):
        monkeypatch.setattr(act, 'forward', lambda *a: pytest.fail('GELU module ran'))
    x = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        assert max_rel_error(model.stem(x), stem(x)) < 1e-5


def test_deploy_fuses_residual_sums_into_projections():
    """In deploy every block's FFN fc2 and every attention's proj take the residual as a oneDNN
    post-op (channels-last, as in the bf16 mode); outputs equal eval."""
    from mmext import compat
    # probed here: on a fresh process the probe's own fused ops would be in the profile
    assert compat.onednn_fused(torch.float32), compat.onednn_status(torch.float32)
    model = randomize(EfficientFormerV2('s0')).eval()
    fused = copy.deepcopy(model).switch_to_deploy().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 96, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=True) as prof:
            out = fused(x)
    assert max_rel_error(ref, out) < 1e-5
    blocks = [b for s in fused.stages for b in s.blocks]
    attns = sum(b.token_mixer is not None for b in blocks)
    downs = sum(getattr(s.downsample, 'attn', None) is not None for s in fused.stages)
    sums = [e for e in prof.events() if e.name == 'mkldnn::_convolution_pointwise'
            and len(e.input_shapes) == 13]  # the binary overload: X, other, W, B, ...
    assert len(sums) == len(blocks) + attns + downs, (len(sums), len(blocks), attns, downs)


@pytest.mark.parametrize('cls', ['Attention4D', 'Attention4DDownsample'])
def test_channels_last_attention_output_stays_channels_last(cls, monkeypatch):
    """With channels_last layers and input (the bf16 mode), the map entering act -> proj is
    channels_last too, so proj's conv does not convert it (a copy of the largest map)."""
    attn = (Attention4D(16, resolution=7, stride=2) if cls == 'Attention4D'
            else Attention4DDownsample(16, 24, resolution=7)).eval()
    attn.switch_to_deploy() if hasattr(attn, 'switch_to_deploy') else None
    attn = attn.to(memory_format=torch.channels_last)
    seen = []
    attn.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        attn(torch.randn(2, 16, 10, 14).contiguous(memory_format=torch.channels_last))
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)
