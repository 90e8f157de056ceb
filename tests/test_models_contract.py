"""The backbone contract, the same in all four families: strict arch dicts and arguments, input
checks (batch 0 included), deploy=True and fused/unfused checkpoints (through mmengine's
load_checkpoint and init_cfg, with real files), with_cp recomputation, drop_path, attn_impl."""
import ast
import copy
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.errors import CheckpointError, ConfigError
from mmext.models import EdgeViT, EfficientFormer, EfficientFormerV2, SHViT
from tests.helpers import max_rel_error, randomize_norms, randomize_tables

# family: (class, tiny arch, strides, misspelt optional key -> the key it should suggest)
FAMILIES = {
    'SHViT': (SHViT, dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], partial_dims=[8, 12, 16]),
              (16, 32, 64), ('qk_dims', 'qk_dim')),
    'EfficientFormer': (EfficientFormer, dict(embed_dims=[16, 24, 32, 48], depths=[1, 1, 1, 2],
                                              num_vit=1), (4, 8, 16, 32),
                        ('mlp_ratios', 'mlp_ratio')),
    'EfficientFormerV2': (EfficientFormerV2, dict(embed_dims=[16, 16, 32, 32],
                                                  depths=[1, 1, 2, 2], num_vit=1),
                          (4, 8, 16, 32), ('mlp_ratio', 'mlp_ratios')),
    'EdgeViT': (EdgeViT, dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1],
                              num_heads=[1, 2, 3, 4]), (4, 8, 16, 32),
                ('sample_ratio', 'sample_ratios')),
}
NAMES = sorted(FAMILIES)


@torch.no_grad()
def build(family, seed=0, **kwargs):
    """A tiny model of ``family`` with every norm, layer scale and bias table randomised."""
    cls, arch, _, _ = FAMILIES[family]
    torch.manual_seed(seed)
    return randomize_tables(randomize_norms(cls(arch, **kwargs), seed), seed)


def expected_shapes(family, size, batch=1, indices=None):
    _, arch, strides, _ = FAMILIES[family]
    indices = range(len(strides)) if indices is None else indices
    return [(batch, arch['embed_dims'][i], math.ceil(size[0] / strides[i]),
             math.ceil(size[1] / strides[i])) for i in indices]


# ----------------------------------------------------------------------------- arch dicts
def _bad_archs():
    for family in NAMES:
        cls, arch, strides, (typo, right) = FAMILIES[family]
        yield family, dict(arch, **{typo: arch.get(right, 4)}), f"Did you mean '{right}'"
        yield family, dict(arch, key_dims=32), 'unknown key'
        yield family, dict(arch, depths=[1] * (len(strides) - 1)), 'depths needs'
        yield family, dict(arch, embed_dims=arch['embed_dims'] + [64]), 'embed_dims needs'
        yield family, dict(arch, depths=[1, 0] + [1] * (len(strides) - 2)), 'positive ints'
    yield 'SHViT', dict(FAMILIES['SHViT'][1], partial_dims=[8, 60, 16]), r'partial_dims\[1\]'
    yield 'SHViT', dict(FAMILIES['SHViT'][1], embed_dims=[36, 48, 64]), 'multiple of 8'
    yield 'EfficientFormer', dict(FAMILIES['EfficientFormer'][1], num_vit=3), 'num_vit=3'
    yield 'EfficientFormer', dict(FAMILIES['EfficientFormer'][1], pool_size=4), 'pool_size'
    yield 'EfficientFormerV2', dict(FAMILIES['EfficientFormerV2'][1], num_vit=3), 'num_vit=3'
    yield 'EdgeViT', dict(FAMILIES['EdgeViT'][1], num_heads=[1, 2, 5, 4]), r'num_heads\[2\]'
    yield 'EdgeViT', dict(FAMILIES['EdgeViT'][1], sample_ratios=[4, 2, 1]), 'sample_ratios'


@pytest.mark.parametrize('family, arch, match', list(_bad_archs()))
def test_bad_arch_dicts_are_refused(family, arch, match):
    with pytest.raises(ConfigError, match=match) as info:
        FAMILIES[family][0](arch)
    if 'unknown key' in match or 'Did you mean' in match:
        assert 'Allowed keys' in str(info.value)


@pytest.mark.parametrize('kwargs', [
    dict(out_indices=(1.7, )), dict(out_indices=(True, )), dict(out_indices=1.0),
    dict(out_indices=('1', )), dict(out_indices=[0, None]), dict(frozen_stages=True),
    dict(frozen_stages=1.0), dict(frozen_stages='0')])
@pytest.mark.parametrize('family', NAMES)
def test_non_int_indices_are_refused(family, kwargs):
    with pytest.raises(ConfigError, match='out_indices' if 'out_indices' in kwargs
                       else 'frozen_stages'):
        FAMILIES[family][0](FAMILIES[family][1], **kwargs)


def test_bad_attn_impl_is_refused():
    for family in NAMES:
        with pytest.raises(ConfigError, match='attn_impl'):
            FAMILIES[family][0](FAMILIES[family][1], attn_impl='flash')


def test_no_family_imports_another():
    """Each family file imports only base/layers (shared pieces), never a sibling family."""
    import mmext.models as pkg
    files = {'shvit', 'efficientformer', 'efficientformer_v2', 'edgevit'}
    for name in files:
        tree = ast.parse(open(osp.join(osp.dirname(pkg.__file__), f'{name}.py')).read())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {f'mmext.models.{f}' for f in files} & imported, name


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize('family', NAMES)
def test_bad_inputs_are_refused_clearly(family):
    model = FAMILIES[family][0](FAMILIES[family][1]).eval()
    for x, match in [(torch.randn(3, 32, 32), '4-D'), (torch.randn(1, 1, 32, 32), '3-channel'),
                     (torch.randn(1, 4, 32, 32), '3-channel'), (torch.randn(1, 3, 0, 0), 'at least'),
                     (torch.randn(1, 3, 32, 0), 'at least')]:
        with pytest.raises(ConfigError, match=match):
            model(x)


@pytest.mark.parametrize('family', NAMES)
def test_smallest_input_and_batch_zero(family):
    model = build(family).eval()
    size = (model.min_input_size, model.min_input_size)
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
        assert [tuple(o.shape) for o in outs] == expected_shapes(family, size, 2)
        empty = model(torch.randn(0, 3, 37, 45))
    assert [tuple(o.shape) for o in empty] == expected_shapes(family, (37, 45), 0)


@pytest.mark.parametrize('family', NAMES)
def test_traced_model_runs_at_other_sizes(family):
    """The input checks are plain Python and stay out of a trace: the graph is not size-bound."""
    model = build(family).eval().switch_to_deploy()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64), check_trace=False)
        x = torch.randn(2, 3, 72, 88)
        assert max_rel_error(model(x), traced(x)) < 1e-5


# ----------------------------------------------------------------------------- deploy and checkpoints
class Detector(nn.Module):
    """A stand-in for a detector holding the backbone (keys under ``backbone.``)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _features(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize('family', NAMES)
def test_deploy_checkpoints_through_mmengine(family, tmp_path):
    cls, arch, _, _ = FAMILIES[family]
    model = build(family).eval()
    x = torch.randn(1, 3, 53, 71)
    ref = _features(model, x)
    fused = copy.deepcopy(model).switch_to_deploy()
    built = cls(arch, deploy=True)
    assert built.deploy and set(built.state_dict()) == set(fused.state_dict())
    fused_file, plain_file = str(tmp_path / 'fused.pth'), str(tmp_path / 'plain.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in fused.state_dict().items()}},
               fused_file)
    torch.save({'state_dict': {'backbone.' + k: v for k, v in model.state_dict().items()}},
               plain_file)
    # fused file -> deploy=True model: loads as it is
    det = Detector(cls(arch, deploy=True))
    load_checkpoint(det, fused_file, strict=True)
    assert max_rel_error(ref, _features(det.backbone, x)) < 1e-5
    # unfused file -> deploy=True model: folded on the way in
    det = Detector(cls(arch, deploy=True))
    load_checkpoint(det, plain_file, strict=True)
    assert max_rel_error(ref, _features(det.backbone, x)) < 1e-5
    # fused file -> unfused model: refused, whatever strictness
    for strict in (True, False):
        with pytest.raises(CheckpointError, match='deploy=True'):
            load_checkpoint(Detector(cls(arch)), fused_file, strict=strict)
        with pytest.raises(CheckpointError, match='deploy=True'):
            cls(arch).load_state_dict(fused.state_dict(), strict=strict)
    # unfused file -> unfused model, as always
    det = Detector(cls(arch))
    load_checkpoint(det, plain_file, strict=True)
    assert max_rel_error(ref, _features(det.backbone, x)) == 0


@pytest.mark.parametrize('family', NAMES)
def test_deploy_with_pretrained_init_cfg(family, tmp_path):
    cls, arch, _, _ = FAMILIES[family]
    model = build(family, seed=3).eval()
    x = torch.randn(1, 3, 40, 56)
    ref = _features(model, x)
    for name, state in [('plain', model.state_dict()),
                        ('fused', copy.deepcopy(model).switch_to_deploy().state_dict())]:
        path = str(tmp_path / f'{name}.pth')
        torch.save({'state_dict': state}, path)
        fresh = cls(arch, deploy=True, init_cfg=dict(type='Pretrained', checkpoint=path))
        fresh.init_weights()
        assert max_rel_error(ref, _features(fresh, x)) < 1e-5, name


@pytest.mark.parametrize('family', NAMES)
def test_load_pretrained_keeps_fused_and_unfused_apart(family, tmp_path):
    """mmext's loader called directly: an unfused file is folded into a deploy model (EdgeViT's
    fused structure has no keys of its own, so the check must see the unfiltered file), and a
    fused file offered to an unfused model is refused."""
    from mmext.checkpoints import load_pretrained
    cls, arch, _, _ = FAMILIES[family]
    model = build(family, seed=5).eval()
    x = torch.randn(1, 3, 40, 56)
    ref = _features(model, x)
    plain, fused = str(tmp_path / 'plain.pth'), str(tmp_path / 'fused.pth')
    torch.save({'state_dict': model.state_dict()}, plain)
    torch.save({'state_dict': copy.deepcopy(model).switch_to_deploy().state_dict()}, fused)
    for path in (plain, fused):
        deployed = cls(arch, deploy=True)
        load_pretrained(deployed, path)
        assert max_rel_error(ref, _features(deployed, x)) < 1e-5, path
    with pytest.raises(CheckpointError, match='deploy=True'):
        load_pretrained(cls(arch), fused)


def test_partial_unfused_checkpoint_is_not_folded():
    model = build('SHViT')
    state = model.state_dict()
    del state['stages.1.blocks.0.ffn.m.pw1.bn.running_var']
    with pytest.raises(CheckpointError, match='cannot be folded'):
        SHViT(FAMILIES['SHViT'][1], deploy=True).load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------- training options
@pytest.mark.parametrize('family', NAMES)
def test_with_cp_recomputes_each_block_in_backward(family):
    """Checkpointing shows as a second forward call of every block during backward."""
    model = build(family)
    model.train()
    x = torch.randn(2, 3, 48, 48)
    for with_cp, calls_per_block in [(False, 1), (True, 2)]:
        model.with_cp = with_cp
        calls = {}
        # a pre-hook: recomputation may stop early, before a block's forward returns
        hooks = [block.register_forward_pre_hook(
            lambda m, i, key=(s, j): calls.__setitem__(key, calls.get(key, 0) + 1))
            for s, stage in enumerate(model.stages) for j, block in enumerate(stage.blocks)]
        sum(o.square().mean() for o in model(x)).backward()
        for h in hooks:
            h.remove()
        assert calls and set(calls.values()) == {calls_per_block}, (with_cp, calls)
        assert len(calls) == sum(len(s.blocks) for s in model.stages)


@pytest.mark.parametrize('family', NAMES)
def test_drop_path_only_in_training(family):
    model = build(family, drop_path_rate=0.5, norm_eval=True)
    rates = [m.drop_path_rate for m in model.modules() if hasattr(m, 'drop_path_rate')]
    assert max(rates) == 0.5 and min(rates) == 0.0
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    with torch.no_grad():
        ref = model.eval()(x)
        assert max_rel_error(ref, model(x)) == 0
        assert max_rel_error(ref, model.train()(x)) > 1e-3
        plain = build(family, norm_eval=True).train()  # the same weights without drop path
        assert max_rel_error(ref, plain(x)) < 1e-6


# ----------------------------------------------------------------------------- attention impls
def _ops(model, x):
    with torch.no_grad(), torch.autograd.profiler.profile() as prof:
        out = model(x)
    return out, {e.name for e in prof.function_events}


@pytest.mark.parametrize('family', NAMES)
def test_sdpa_and_explicit_attention_agree(family):
    x = torch.randn(2, 3, 72, 88)
    outs = {}
    for impl in ('sdpa', 'explicit', 'auto'):
        model = build(family, attn_impl=impl).eval()
        outs[impl], ops = _ops(model, x)
        uses_sdpa = 'aten::scaled_dot_product_attention' in ops
        if family != 'EfficientFormerV2' or impl != 'explicit':
            # (V2's talking-head attention is explicit always; its downsampling one switches)
            assert uses_sdpa == (impl == 'sdpa'), (impl, uses_sdpa)  # 'auto' on the CPU: explicit
    assert max_rel_error(outs['sdpa'], outs['explicit']) < 1e-5
    assert max_rel_error(outs['auto'], outs['explicit']) == 0


# ----------------------------------------------------------------------------- attention-bias cache
def _bias_modules():
    from mmext.models.efficientformer import Attention
    from mmext.models.efficientformer_v2 import Attention4D, Attention4DDownsample
    return [('v1', Attention(32, key_dim=8, num_heads=4), (4, 6), None, 1),
            ('v2', Attention4D(16, key_dim=8, num_heads=4), (4, 6), None, 1),
            ('v2-down', Attention4DDownsample(16, 16, key_dim=8, num_heads=4), (3, 5), (5, 9), 2)]


@pytest.mark.parametrize('index', range(3))
def test_bias_cache_follows_every_change_of_the_table(index):
    _, attn, q_size, k_size, stride = _bias_modules()[index]
    attn.eval()
    param = attn.attention_biases

    def bias():
        return attn.attention_bias(q_size, k_size, q_stride=stride)

    def fresh():
        return attn._compute_bias(q_size, k_size or q_size, stride)

    with torch.no_grad():
        param.copy_(torch.randn(param.shape))
        first = bias()
        assert bias() is first and torch.equal(first, fresh())  # cached
        changes = [
            lambda: param.add_(1.0),  # in place, version counter bumped
            # in place through .data (its own version counter): unseen until eval()/train()
            lambda: (param.data.mul_(0.5), attn.eval()),
            lambda: (param.data.copy_(torch.randn(param.shape)), attn.eval()),
            lambda: setattr(param, 'data', param.data * 2 + 1),  # a new tensor
            lambda: attn.load_state_dict({'attention_biases': torch.randn(param.shape)},
                                         strict=False),
        ]
        for change in changes:
            before = bias()
            change()
            after = bias()
            assert not torch.equal(after, before) and torch.equal(after, fresh())
            assert bias() is after  # and cached again
        attn.double()  # dtype change: cache emptied, recomputed in float64
        assert bias().dtype == torch.float64 and torch.equal(bias(), fresh())


def test_bias_cache_is_not_pickled_or_deep_copied():
    import io
    import pickle
    model = build('EfficientFormerV2').eval()

    def pickled_size(m):
        buf = io.BytesIO()
        pickle.dump(m, buf)
        return buf.tell()

    size = pickled_size(model)
    with torch.no_grad():
        model(torch.randn(1, 3, 320, 448))
    caches = [m._bias_cache for m in model.modules() if hasattr(m, '_bias_cache')]
    assert len(caches) == 3 and all(len(c) == 1 for c in caches)
    assert sum(b.numel() for c in caches for _, b in c.values()) > 2e5  # ~0.8 MB of biases
    assert abs(pickled_size(model) - size) < 1000
    clone = copy.deepcopy(model)
    assert all(not m._bias_cache for m in clone.modules() if hasattr(m, '_bias_cache'))
    assert all(len(c) == 1 for c in caches)  # the original keeps its cache
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert max_rel_error(model(x), clone(x)) == 0
