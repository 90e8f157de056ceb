"""EdgeViT: what only EdgeViT has (sparse attention, arch rules, the deploy fold of local
propagation), its checkpoint layouts and configs; the rest of the backbone contract is
tests/test_models_contract.py."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.checkpoints import load_pretrained
from mmext.errors import CheckpointError, ConfigError
from mmext.models import EdgeViT
from mmext.models.families import FAMILIES
from mmext.models.edgevit import GlobalSparseAttention
from tests.helpers import max_rel_error, randomize_norms

# (Paper params/MACs and channels of every arch, output sizes, out_indices, frozen_stages,
# norm_eval, with_cp, drop_path, deploy equality, batch 0 and checkpoints:
# tests/test_models_contract.py, for every family.)
TINY = FAMILIES['EdgeViT'].tiny
_BN = nn.modules.batchnorm._BatchNorm


def _randomized(arch='xxs', seed=0, **kwargs):
    """A model with random weights everywhere (biases, norms and BN statistics included)."""
    torch.manual_seed(seed)
    model = randomize_norms(EdgeViT(arch, **kwargs), seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.normal_(std=0.05)
    return model


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize('ratio, size', [(4, (13, 19)), (2, (7, 9)), (4, (8, 12)), (2, (1, 3))])
def test_sparse_attention_equals_padded_computation(ratio, size):
    """At sizes the sample ratio does not divide, the attention equals the same computation on the
    map zero-padded to a multiple of the ratio, cropped back (delegates never read padding)."""
    torch.manual_seed(0)
    attn = GlobalSparseAttention(24, 2, ratio).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(std=0.3)
    h, w = size
    ph, pw = math.ceil(h / ratio) * ratio, math.ceil(w / ratio) * ratio
    tokens = torch.randn(2, h * w, 24)
    padded = F.pad(tokens.transpose(1, 2).reshape(2, 24, h, w), (0, pw - w, 0, ph - h))
    with torch.no_grad():
        out = attn(tokens, (h, w))
        ref = attn(padded.flatten(2).transpose(1, 2), (ph, pw))
    ref = ref.transpose(1, 2).reshape(2, 24, ph, pw)[:, :, :h, :w].flatten(2).transpose(1, 2)
    assert out.shape == (2, h * w, 24)
    assert torch.allclose(out, ref, atol=1e-5)


def test_sparse_attention_delegates_and_propagation():
    """Delegates are the top-left token of each window; each output token depends only on the
    delegates (all of them, through attention), never directly on the other tokens."""
    attn = GlobalSparseAttention(8, 2, 4).eval()
    tokens = torch.randn(1, 8, 12, 8)
    others = torch.ones(1, 8, 12, 1)
    others[:, 0::4, 0::4] = 0  # the delegates' positions
    delegate = torch.zeros(1, 8, 12, 1)
    delegate[:, 4, 8] = 1
    with torch.no_grad():
        ref = attn(tokens.view(1, 96, 8), (8, 12))
        same = attn((tokens + others * torch.randn(1, 8, 12, 8)).view(1, 96, 8), (8, 12))
        moved = attn((tokens + delegate).view(1, 96, 8), (8, 12))
    assert torch.allclose(same, ref, atol=1e-6)
    assert not torch.allclose(moved, ref, atol=1e-4)


# ----------------------------------------------------------------------------- arguments
def test_custom_arch_dict():
    arch = dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4],
                sample_ratios=[2, 2, 1, 1], mlp_ratio=2)
    model = EdgeViT(arch).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32, 48, 64]
    assert model.stages[2].blocks[0].global_attn.attn.sample_ratio == 1
    assert isinstance(model.stages[2].blocks[0].local_agg, nn.Identity)
    assert model.stages[0].blocks[0].global_attn.mlp.fc1.out_features == 32


@pytest.mark.parametrize('arch, match', [(dict(TINY, num_heads=[1, 2, 5, 4]), r'num_heads\[2\]'),
                                         (dict(TINY, sample_ratios=[4, 2, 1]), 'sample_ratios')])
def test_edgevit_arch_rules(arch, match):
    with pytest.raises(ConfigError, match=match):
        EdgeViT(arch)


def test_batchnorms_only_in_local_aggregation():
    """Two per local aggregation (XXS: in 1 + 1 + 3 blocks, none in the last stage)."""
    with torch.device('meta'):
        model = EdgeViT('xxs')
    norms = [n for n, m in model.named_modules() if isinstance(m, _BN)]
    assert len(norms) == 2 * 5 and all('.local_agg.' in n for n in norms)




# ----------------------------------------------------------------------------- deploy
@pytest.mark.parametrize('size', [(64, 64), (70, 93), (33, 17)])
def test_deploy_local_propagation_skips_transposed_conv(size, monkeypatch):
    """Deploy runs local propagation folded with its norm and projection (no ConvTranspose2d
    call) and each MLP's fc1 + GELU as one fused op (no GELU module call), outputs equal (odd
    sizes: the crop), the same state dict keys, and a deconv already swapped for
    fast_ops.WindowSpread (engine.precision's copy) still works."""
    from mmext.deploy.fast_ops import swap_slow_layers
    model = _randomized('xxs').eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.normal_()  # no two taps alike: a wrong tap order shows
    x = torch.randn(2, 3, *size)
    fused = copy.deepcopy(model).switch_to_deploy()
    swapped = copy.deepcopy(fused)
    assert swap_slow_layers(swapped) > 0
    with torch.no_grad():
        ref = model(x)
        monkeypatch.setattr(nn.ConvTranspose2d, 'forward',
                            lambda *a, **k: pytest.fail('transposed conv ran in deploy'))
        # and every MLP's fc1 + GELU runs fused (onednn.conv_gelu / linear_gelu)
        monkeypatch.setattr(nn.GELU, 'forward', lambda *a: pytest.fail('GELU module ran'))
        out = fused(x)
        out_swapped = swapped(x)
    assert max_rel_error(ref, out) < 1e-5
    assert max_rel_error(ref, out_swapped) < 1e-5
    assert set(fused.state_dict()) == set(type(model)('xxs', deploy=True).state_dict())


def _reference_lgl(block, x):
    """One LGL block as the authors' code computes it (LocalAgg, then SelfAttn with its
    AvgPool2d(1, r) sampler over the *normalised* map, ConvTranspose2d LocalProp, LayerNorm,
    projection), written out here with plain functional ops on the block's parameters."""
    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    def conv(m, t):
        return F.conv2d(t, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)

    def ln(m, t):
        return F.layer_norm(t, m.normalized_shape, m.weight, m.bias, m.eps)

    la, sa = block.local_agg, block.global_attn
    if not isinstance(la, nn.Identity):
        x = x + conv(la.pos_embed, x)
        agg = la.aggregate
        x = x + conv(agg.pw2, conv(agg.dw, conv(agg.pw1.linear, bn(agg.pw1.bn, x))))
        x = x + conv(la.mlp.fc2, F.gelu(conv(la.mlp.fc1.linear, bn(la.mlp.fc1.bn, x))))
    x = x + conv(sa.pos_embed, x)
    n, c, h, w = x.shape
    t = x.flatten(2).transpose(1, 2)
    attn = sa.attn
    r, heads = attn.sample_ratio, attn.num_heads
    a = ln(sa.norm1, t).transpose(1, 2).reshape(n, c, h, w)
    a = F.avg_pool2d(a, 1, r).flatten(2).transpose(1, 2)
    qkv = F.linear(a, attn.qkv.weight, attn.qkv.bias).reshape(n, -1, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1) @ v
    out = out.transpose(1, 2).reshape(n, -1, c)
    if r > 1:
        out = out.permute(0, 2, 1).reshape(n, c, h // r, w // r)
        out = F.conv_transpose2d(out, attn.local_prop.weight, attn.local_prop.bias, stride=r,
                                 groups=c)
        out = ln(attn.norm, out.reshape(n, c, -1).permute(0, 2, 1))
    t = t + F.linear(out, attn.proj.weight, attn.proj.bias)
    hid = F.gelu(F.linear(ln(sa.norm2, t), sa.mlp.fc1.weight, sa.mlp.fc1.bias))
    t = t + F.linear(hid, sa.mlp.fc2.weight, sa.mlp.fc2.bias)
    return t.transpose(1, 2).reshape(n, c, h, w)


@pytest.mark.parametrize('stage,size', [(0, 16), (1, 8), (2, 6), (3, 3)])
def test_lgl_block_equals_authors_computation(stage, size):
    """Every stage's block (sample ratio 4, 2, 2, 1), as built and after switch_to_deploy, equals
    the authors' operations written out independently (the pre-attention LayerNorm over all
    tokens, pooling, transposed conv, LayerNorm, projection): catches a norm skipped or moved,
    a dropped constant in the deploy path's folded propagate/norm/project, a residual lost in a
    fused op."""
    model = _randomized('xxs').eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.LayerNorm)):
                m.weight.normal_()  # no two taps or channels alike
                m.bias.normal_()
    block = model.stages[stage].blocks[0]
    x = torch.randn(2, block.global_attn.norm1.normalized_shape[0], size, size)
    fused = copy.deepcopy(model).switch_to_deploy().switch_to_deploy()  # idempotent
    with torch.no_grad():
        ref = _reference_lgl(block, x)
        assert max_rel_error(block(x), ref) < 1e-5
        assert max_rel_error(fused.stages[stage].blocks[0](x), ref) < 1e-5


@pytest.mark.parametrize('size', [(8, 12), (7, 10)])
def test_deploy_propagate_project_without_residual(size):
    """The deploy path's folded propagate/norm/project without a residual (a deployed model
    trained with drop path) equals transposed conv, crop, LayerNorm and projection."""
    attn = GlobalSparseAttention(16, 2, 2).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    h, w = size
    d = torch.randn(2, -(-h // 2), -(-w // 2), 16)
    with torch.no_grad():
        ref = attn.local_prop(d.permute(0, 3, 1, 2))[:, :, :h, :w].flatten(2).transpose(1, 2)
        ref = attn.proj(attn.norm(ref))
        attn.switch_to_deploy()
        out = attn._propagate_project(d, (h, w))
        res = torch.randn_like(ref)
        with_res = attn._propagate_project(d, (h, w), residual=res)
    assert max_rel_error(out, ref) < 1e-5
    assert max_rel_error(with_res, ref + res) < 1e-5


def _propagations(model):
    return [m for m in model.modules()
            if isinstance(m, GlobalSparseAttention) and m.sample_ratio > 1]


def _count_folds(monkeypatch):
    calls = []
    fold = GlobalSparseAttention._fold
    monkeypatch.setattr(GlobalSparseAttention, '_fold',
                        lambda self: calls.append(self) or fold(self))
    return calls


def test_deploy_folds_local_propagation_once(monkeypatch):
    """switch_to_deploy folds each local propagation with its norm and projection once;
    inference forwards reuse the folded weights; after a change of a parameter (an optimizer
    step, load_state_dict) only that module folds again, and the output equals both the unfused
    model's and a deploy=True model loading the state dict (the folded weights are not saved)."""
    plain = _randomized('xxs').eval()
    calls = _count_folds(monkeypatch)
    model = copy.deepcopy(plain).switch_to_deploy()
    props = _propagations(model)
    assert len(props) == 5 and sorted(map(id, calls)) == sorted(map(id, props))  # xxs: r > 1
    x = torch.randn(2, 3, 70, 93)
    with torch.no_grad():
        first = model(x)
        assert max_rel_error(first, model(x)) == 0
    with torch.inference_mode():
        assert max_rel_error(first, model(x)) == 0
    assert len(calls) == 5
    with torch.no_grad():
        shift = torch.randn(props[2].norm.bias.shape)
        for m in (props[2], _propagations(plain)[2]):
            m.proj.weight.mul_(-1)
            m.norm.bias.add_(shift)
        changed, ref = model(x), plain(x)
    assert len(calls) == 6 and calls[-1] is props[2]
    assert max_rel_error(ref, changed) < 1e-5 and max_rel_error(first, changed) > 1e-3
    assert set(model.state_dict()) == set(EdgeViT('xxs', deploy=True).state_dict())
    loaded = EdgeViT('xxs', deploy=True).eval()
    loaded.load_state_dict(model.state_dict())
    clone = copy.deepcopy(model)
    assert not any(m._fold_cache for m in _propagations(clone))  # not copied
    with torch.no_grad():
        assert max_rel_error(changed, loaded(x)) < 1e-6
        assert max_rel_error(changed, clone(x)) == 0
    model.double()  # cache emptied, folded again from the float64 parameters
    assert not any(m._fold_cache for m in props)
    with torch.no_grad():
        assert max_rel_error(plain.double()(x.double()), model(x.double())) < 1e-6
    assert all(m._fold_cache['fold'][1][0].dtype == torch.float64 for m in props)


def test_deploy_with_autograd():
    """A deployed model with gradients (it raised: an out= op under autograd): in eval, the
    unfused model's outputs and gradients, which reach local propagation, its norm and the
    projection; trained in train mode, then in eval, it equals a deploy=True model loading its
    state dict (the fold follows the updated parameters)."""
    plain = _randomized('xxs').eval()
    fused = copy.deepcopy(plain).switch_to_deploy()
    x = torch.randn(2, 3, 64, 64)  # sizes the windows divide: the out= path's case
    grads = []
    for model in (plain, fused):
        xg = x.clone().requires_grad_()
        sum(o.square().mean() for o in model(xg)).backward()
        prop = _propagations(model)[0]
        grads.append([xg.grad, prop.local_prop.weight.grad, prop.norm.weight.grad,
                      prop.proj.weight.grad])
    assert all(g is not None for g in grads[1])
    assert max_rel_error(grads[0], grads[1]) < 1e-4
    fused.train()
    opt = torch.optim.SGD(fused.parameters(), lr=0.1)
    opt.zero_grad()
    sum(o.square().mean() for o in fused(x)).backward()
    opt.step()
    fused.eval()
    loaded = EdgeViT('xxs', deploy=True).eval()
    loaded.load_state_dict(fused.state_dict())
    with torch.no_grad():
        assert max_rel_error(loaded(x), fused(x)) < 1e-6


# ----------------------------------------------------------------------------- checkpoints
_OFFICIAL_NAMES = {  # mmext sub-path inside a block -> the authors' (written independently)
    'local_agg.pos_embed': 'LocalAgg.pos_embed',
    'local_agg.aggregate.pw1.bn': 'LocalAgg.norm1',
    'local_agg.aggregate.pw1.linear': 'LocalAgg.conv1',
    'local_agg.aggregate.dw': 'LocalAgg.attn',
    'local_agg.aggregate.pw2': 'LocalAgg.conv2',
    'local_agg.mlp.fc1.bn': 'LocalAgg.norm2',
    'local_agg.mlp.fc1.linear': 'LocalAgg.mlp.fc1',
    'local_agg.mlp.fc2': 'LocalAgg.mlp.fc2',
    'global_attn.attn.local_prop': 'SelfAttn.attn.LocalProp',
}


def to_official(state):
    """mmext -> the authors' EdgeViT keys, plus their classifier (final BN and head)."""
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'stem':
            new = ['patch_embed1'] + parts[1:]
        elif parts[2] == 'downsample':
            new = [f'patch_embed{int(parts[1]) + 1}'] + parts[3:]
        else:
            inner, leaf = '.'.join(parts[4:-1]), parts[-1]
            inner = _OFFICIAL_NAMES.get(inner, inner.replace('global_attn', 'SelfAttn'))
            new = [f'blocks{int(parts[1]) + 1}', parts[3], inner, leaf]
        out['.'.join(new)] = value
    dim = state['stages.3.downsample.proj.weight'].shape[0]
    out.update({'norm.weight': torch.rand(dim), 'norm.bias': torch.rand(dim),
                'norm.running_mean': torch.rand(dim), 'norm.running_var': torch.rand(dim),
                'norm.num_batches_tracked': torch.tensor(3),
                'head.weight': torch.randn(1000, dim), 'head.bias': torch.randn(1000)})
    return out


# The authors' keys of their first block (saic-fi/edgevit, src/edgevit.py), for the layout check.
_AUTHORS_BLOCK1 = {f'blocks1.0.{m}.{p}' for m, ps in {
    'LocalAgg.pos_embed': 'wb', 'LocalAgg.conv1': 'wb', 'LocalAgg.attn': 'wb',
    'LocalAgg.conv2': 'wb', 'LocalAgg.mlp.fc1': 'wb', 'LocalAgg.mlp.fc2': 'wb',
    'LocalAgg.norm1': 'wbmvn', 'LocalAgg.norm2': 'wbmvn', 'SelfAttn.pos_embed': 'wb',
    'SelfAttn.norm1': 'wb', 'SelfAttn.attn.qkv': 'wb', 'SelfAttn.attn.proj': 'wb',
    'SelfAttn.attn.LocalProp': 'wb', 'SelfAttn.attn.norm': 'wb', 'SelfAttn.norm2': 'wb',
    'SelfAttn.mlp.fc1': 'wb', 'SelfAttn.mlp.fc2': 'wb'}.items() for p in (
        {'w': 'weight', 'b': 'bias', 'm': 'running_mean', 'v': 'running_var',
         'n': 'num_batches_tracked'}[c] for c in ps)}


@pytest.fixture(scope='module')
def source():
    """A randomly initialised EdgeViT-XXS and its features on a fixed input."""
    model = _randomized('xxs', seed=3).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model(x)
    return model, x, feats


def _load(path, x, arch='xxs'):
    model = EdgeViT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    with torch.no_grad():
        return model.eval()(x)


def _assert_same(a, b):
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


def test_official_layout_loads_and_drops_classifier(source, tmp_path):
    model, x, feats = source
    state = to_official(model.state_dict())
    assert len(state) == 251  # as the authors' edgevit_xxs
    assert {k for k in state if k.startswith('blocks1.0.')} == _AUTHORS_BLOCK1
    assert 'blocks4.1.SelfAttn.attn.qkv.weight' in state and 'patch_embed4.norm.bias' in state
    path = tmp_path / 'edgevit_xxs_official.pth'
    torch.save({'model': state, 'epoch': 300, 'args': {'model': 'edgevit_xxs'}}, path)
    _assert_same(feats, _load(path, x))
    report = load_pretrained(EdgeViT('xxs'), str(path))
    assert report.layout == 'official'
    assert report.missing == [] and report.unexpected == []  # head and final norm: dropped
    assert len(report.loaded) == 244


@pytest.mark.parametrize('wrap', [
    lambda s: s,
    lambda s: {'state_dict': s},
    lambda s: {'state_dict': {'module.' + k: v for k, v in s.items()}},
    lambda s: {'state_dict': {**{'backbone.' + k: v for k, v in s.items()},
                              'neck.lateral_convs.0.conv.weight': torch.zeros(1)}},
    lambda s: {'model': {'module.' + k: v for k, v in to_official(s).items()}},
])
def test_layouts_load_wrapped(source, tmp_path, wrap):
    model, x, feats = source
    path = tmp_path / 'ckpt.pth'
    torch.save(wrap(model.state_dict()), path)
    _assert_same(feats, _load(path, x))


def test_partial_checkpoint_reports_missing_keys(source, tmp_path):
    model, _, _ = source
    state = to_official(model.state_dict())
    del state['blocks3.2.SelfAttn.mlp.fc2.bias']
    state['blocks5.0.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save({'model': state}, path)
    report = load_pretrained(EdgeViT('xxs'), str(path))
    assert report.missing == ['stages.2.blocks.2.global_attn.mlp.fc2.bias']
    assert report.unexpected == ['blocks5.0.extra.weight']


def test_checkpoint_of_another_arch_is_refused(tmp_path):
    path = tmp_path / 'edgevit_xs.pth'
    torch.save({'model': to_official(EdgeViT('xs').state_dict())}, path)
    with pytest.raises(CheckpointError, match="does not fit EdgeViT arch 'xxs'"):
        EdgeViT('xxs', init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def test_missing_checkpoint_error_says_what_to_do(tmp_path):
    model = EdgeViT('xxs', init_cfg=dict(type='Pretrained',
                                         checkpoint=str(tmp_path / 'edgevit_xxs.pth')))
    with pytest.raises(CheckpointError, match='init_cfg=None'):
        model.init_weights()


# ----------------------------------------------------------------------------- fused ops
# (EdgeViT's configs: every one builds, tests/test_configs.py; a loss step of its RetinaNet and
# Semantic FPN models, gradients in every backbone parameter, tests/test_detectors.py.)
def test_linear_gelu_equals_linear_then_gelu():
    from mmext.models.onednn import linear_gelu
    torch.manual_seed(0)
    linear = nn.Linear(24, 40)
    x = torch.randn(2, 13, 24) * 2  # pre-activations of order 1-3, where GELU's forms differ
    with torch.no_grad():
        for inp in (x, x.transpose(0, 1)):  # contiguous or not
            torch.testing.assert_close(linear_gelu(linear, inp), F.gelu(linear(inp)),
                                       rtol=1e-5, atol=1e-6)
    out = linear_gelu(linear, x.requires_grad_())  # with grad: the plain ops
    out.sum().backward()
    assert x.grad is not None and linear.weight.grad is not None
