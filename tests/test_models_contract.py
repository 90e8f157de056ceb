"""The backbone contract, the same in every family of the manifest (mmext.models.families):
paper complexity and channels of every named arch; strict arch dicts and arguments; outputs at
any input size, batch 0 included; out_indices, frozen_stages, norm_eval, with_cp, drop_path;
deploy=True and fused/unfused checkpoints (through mmengine's load_checkpoint and init_cfg, with
real files); attn_impl. Each family's own file tests what only that family has."""
import ast
import copy
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.analysis import count_macs, count_params
from mmext.errors import CheckpointError, ConfigError
from mmext.models import SHViT
from mmext.models.families import FAMILIES, arch_entries
from tests.helpers import bicubic_reference, max_rel_error, randomize_norms, randomize_tables

NAMES = list(FAMILIES)
ARCHS = [(f.name, a) for f, a, _ in arch_entries()]


@torch.no_grad()
def build(family, seed=0, **kwargs):
    """The tiny model of ``family`` with every norm, layer scale and bias table randomised."""
    torch.manual_seed(seed)
    fam = FAMILIES[family]
    return randomize_tables(randomize_norms(fam.cls(fam.tiny, **kwargs), seed), seed)


def expected_shapes(family, size, batch=1, indices=None, dims=None):
    fam = FAMILIES[family]
    dims = fam.tiny['embed_dims'] if dims is None else dims
    indices = range(fam.num_stages) if indices is None else indices
    return [(batch, dims[i], math.ceil(size[0] / fam.strides[i]),
             math.ceil(size[1] / fam.strides[i])) for i in indices]


def _shapes(outs):
    return [tuple(o.shape) for o in outs]


# ----------------------------------------------------------------------------- named archs
@pytest.mark.parametrize('family, arch', ARCHS, ids=[f'{f}-{a}' for f, a in ARCHS])
def test_params_macs_and_channels_match_paper(family, arch):
    """Every named arch: the authors' parameter and MAC figures (counted as the family's paper
    counts them, see Family.paper_counts) and the stage channels the configs' necks expect."""
    fam = FAMILIES[family]
    ref = fam.archs[arch]
    with torch.device('meta'):  # counting needs shapes, not initialised weights
        model = fam.cls(arch)
    model = model.to_empty(device='cpu')
    dim = ref.dims[-1]
    if fam.paper_counts == 'distilled':  # final norm, head and distillation head (1000 classes)
        head_params, head_macs = 2 * dim + 2 * (dim * 1000 + 1000), 2 * dim * 1000
    else:
        assert fam.paper_counts == 'backbone'  # params without the classifier, MACs with it
        head_params, head_macs = 0, dim * 1000
    assert round((count_params(model) + head_params) / 1e6, 3) == ref.params
    macs = count_macs(model, (1, 3, ref.cls_size, ref.cls_size)) + head_macs
    assert round(macs / 1e9, 3) == ref.macs
    assert model.out_indices == tuple(range(fam.num_stages))
    assert model.out_channels == list(ref.dims)
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert _shapes(outs) == expected_shapes(family, (64, 64), dims=ref.dims)


def test_manifest_lists_every_registered_backbone():
    from mmext.registry import MODELS
    registered = sorted(n for n, c in MODELS.module_dict.items()
                        if getattr(c, 'arch_settings', None))
    assert registered == sorted(FAMILIES)
    for fam in FAMILIES.values():
        assert list(fam.cls.arch_settings) == list(fam.archs), fam.name
        assert fam.smallest in fam.archs and fam.unknown_arch not in fam.archs
        assert fam.cls.default_num_stages == len(fam.tiny['depths']) == fam.num_stages


# ----------------------------------------------------------------------------- arch dicts
def _bad_archs():
    for family in NAMES:
        fam = FAMILIES[family]
        arch, (typo, right) = fam.tiny, fam.misspelt
        yield family, dict(arch, **{typo: arch.get(right, 4)}), f"Did you mean '{right}'"
        yield family, dict(arch, key_dims=32), 'unknown key'
        yield family, dict(arch, depths=[1] * (fam.num_stages - 1)), 'depths needs'
        yield family, dict(arch, embed_dims=arch['embed_dims'] + [64]), 'embed_dims needs'
        yield family, dict(arch, depths=[1, 0] + [1] * (fam.num_stages - 2)), 'positive ints'


@pytest.mark.parametrize('family, arch, match', list(_bad_archs()))
def test_bad_arch_dicts_are_refused(family, arch, match):
    with pytest.raises(ConfigError, match=match) as info:
        FAMILIES[family].cls(arch)
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
        FAMILIES[family].cls(FAMILIES[family].tiny, **kwargs)


def test_bad_attn_impl_is_refused():
    for family in NAMES:
        with pytest.raises(ConfigError, match='attn_impl'):
            FAMILIES[family].cls(FAMILIES[family].tiny, attn_impl='flash')


def test_no_family_imports_another():
    """Each family file imports only base/layers (shared pieces), never a sibling family."""
    modules = {f.module for f in FAMILIES.values()}
    for module in modules:
        path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                        *module.split('.')) + '.py'
        tree = ast.parse(open(path).read())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for a in node.names}
        assert not (modules - {module}) & imported, module


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize('family', NAMES)
def test_bad_inputs_are_refused_clearly(family):
    model = FAMILIES[family].cls(FAMILIES[family].tiny).eval()
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
        assert _shapes(outs) == expected_shapes(family, size, 2)
        empty = model(torch.randn(0, 3, 37, 45))
    assert _shapes(empty) == expected_shapes(family, (37, 45), 0)


# odd sizes (no stride divides them; EdgeViT's sample ratios and EfficientFormerV2's stride
# attention pad and crop), a square one, and a detection-sized odd one (801x1203)
SIZES = [(64, 96), (97, 131), (33, 47), (31, 30), (801, 1203)]


@pytest.mark.parametrize('family', NAMES)
def test_output_shapes_any_size(family):
    """ceil(H/s) x ceil(W/s) maps at every stage's stride, finite, for any input size."""
    model = build(family).eval()
    with torch.no_grad():
        for size in SIZES:
            outs = model(torch.randn(1, 3, *size))
            assert _shapes(outs) == expected_shapes(family, size), size
            assert all(torch.isfinite(o).all() for o in outs), size


@pytest.mark.parametrize('family', NAMES)
def test_out_indices_subset_negative_and_early_stop(family):
    """Negative indices count from the end, outputs come in stage order whatever the order
    asked, and stages after the last index asked for do not run."""
    n = FAMILIES[family].num_stages
    model = build(family, out_indices=(-1, 1)).eval()
    assert model.out_indices == (1, n - 1)
    dims = FAMILIES[family].tiny['embed_dims']
    assert model.out_channels == [dims[1], dims[n - 1]]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        full = build(family).eval()(x)
        outs = model(x)
        assert _shapes(outs) == expected_shapes(family, (64, 96), 2, (1, n - 1))
        assert torch.equal(outs[0], full[1]) and torch.equal(outs[1], full[n - 1])
        early = build(family, out_indices=(1, 0)).eval()
        assert early.out_indices == (0, 1)
        ran = []
        for i, stage in enumerate(early.stages):
            stage.register_forward_hook(lambda *a, i=i: ran.append(i))
        outs = early(x)
    assert ran == [0, 1] and torch.equal(outs[0], full[0]) and torch.equal(outs[1], full[1])


@pytest.mark.parametrize('family', NAMES)
def test_traced_model_runs_at_other_sizes(family):
    """The input checks are plain Python and stay out of a trace: the graph is not size-bound."""
    model = build(family).eval().switch_to_deploy()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64), check_trace=False)
        x = torch.randn(2, 3, 72, 88)
        assert max_rel_error(model(x), traced(x)) < 1e-5


# ----------------------------------------------------------------------------- training options
@pytest.mark.parametrize('family', NAMES)
def test_frozen_stages(family):
    """frozen_stages=i: the stem and stages 0..i have no gradients and stay in eval mode through
    train(); the later stages train (every value, -1 freezing nothing)."""
    for frozen in range(-1, FAMILIES[family].num_stages):
        model = build(family, frozen_stages=frozen)
        model.train()
        parts = [model.stem, *model.stages]
        for j, module in enumerate(parts):
            is_frozen = j <= frozen + 1 if frozen >= 0 else False
            assert all(p.requires_grad != is_frozen for p in module.parameters()), (frozen, j)
            assert all(m.training != is_frozen for m in module.modules()), (frozen, j)
        if 0 <= frozen < len(model.stages) - 1:
            model.train()  # again: frozen parts stay frozen, the rest learns
            assert not any(m.training for m in model.stem.modules())
            sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
            assert all(p.grad is None for p in model.stem.parameters())
            assert all(p.grad is not None for p in model.stages[-1].parameters())


@pytest.mark.parametrize('sync', [False, True])
@pytest.mark.parametrize('family', NAMES)
def test_norm_eval_keeps_every_batchnorm_in_eval(family, sync):
    """norm_eval: every BatchNorm (SyncBatchNorm too) in eval mode while training; every other
    module (attention, LayerNorm/GroupNorm, blocks) still trains; without it all train."""
    model = build(family, norm_eval=True)
    if sync:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms) == sync
    others = [m for m in model.modules() if not isinstance(m, _BatchNorm)]
    assert all(m.training for m in others), [type(m).__name__ for m in others if not m.training]
    model.norm_eval = False
    model.train()
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize('family', NAMES)
def test_with_cp_recomputes_each_block_and_changes_nothing(family):
    """Checkpointing shows as a second forward call of every block during backward; outputs
    and every parameter's gradient equal those without it."""
    base = build(family, norm_eval=True)
    x = torch.randn(2, 3, 64, 96)
    results = {}
    for with_cp, calls_per_block in [(False, 1), (True, 2)]:
        model = copy.deepcopy(base)
        model.with_cp = with_cp
        model.train()
        calls = {}
        # a pre-hook: recomputation may stop early, before a block's forward returns
        for s, stage in enumerate(model.stages):
            for j, block in enumerate(stage.blocks):
                block.register_forward_pre_hook(
                    lambda m, i, key=(s, j): calls.__setitem__(key, calls.get(key, 0) + 1))
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        assert calls and set(calls.values()) == {calls_per_block}, (with_cp, calls)
        assert len(calls) == sum(len(s.blocks) for s in model.stages)
        results[with_cp] = outs, [p.grad for p in model.parameters()]
    assert max_rel_error(results[False][0], results[True][0]) < 1e-6
    for a, b in zip(results[False][1], results[True][1]):
        assert a is not None and b is not None and torch.allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('family', NAMES)
def test_drop_path_rises_linearly_and_acts_only_in_training(family):
    model = build(family, drop_path_rate=0.5, norm_eval=True)
    blocks = [b for s in model.stages for b in s.blocks]
    rates = []
    for block in blocks:  # one rate per block, on every branch it has
        found = {m.drop_path_rate for m in block.modules() if hasattr(m, 'drop_path_rate')}
        assert len(found) == 1, found
        rates += found
    assert rates == pytest.approx([0.5 * j / (len(blocks) - 1) for j in range(len(blocks))])
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    with torch.no_grad():
        ref = model.eval()(x)
        assert max_rel_error(ref, model(x)) == 0
        assert max_rel_error(ref, model.train()(x)) > 1e-3
        plain = build(family, norm_eval=True).train()  # the same weights without drop path
        assert max_rel_error(ref, plain(x)) < 1e-6


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
def test_switch_to_deploy_equals_eval(family):
    """Every BatchNorm folded (none left), layer scales and biases folded where the family
    folds them, at odd sizes; BatchNorm variances of the order of their eps (random per layer)
    make a fold that forgets eps visible."""
    torch.manual_seed(0)
    model = randomize_tables(randomize_norms(
        FAMILIES[family].cls(FAMILIES[family].tiny), random_eps=True)).eval()
    fused = copy.deepcopy(model).switch_to_deploy()
    assert fused.deploy and not any(isinstance(m, _BatchNorm) for m in fused.modules())
    for size in ((97, 131), (224, 224)):  # 224: a 7x7 last grid (the attention tables' own)
        x = torch.randn(1, 3, *size)
        assert max_rel_error(_features(model, x), _features(fused, x)) < 1e-5, size


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('family', NAMES)
def test_deploy_batch_zero(family, grad):
    """A deployed model takes a batch of 0 images, with and without autograd."""
    model = build(family).eval().switch_to_deploy()
    with torch.set_grad_enabled(grad):
        outs = model(torch.randn(0, 3, 37, 45))
    assert _shapes(outs) == expected_shapes(family, (37, 45), 0)


@pytest.mark.parametrize('family', NAMES)
def test_deploy_checkpoints_through_mmengine(family, tmp_path):
    cls, arch = FAMILIES[family].cls, FAMILIES[family].tiny
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
    cls, arch = FAMILIES[family].cls, FAMILIES[family].tiny
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
    cls, arch = FAMILIES[family].cls, FAMILIES[family].tiny
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
        SHViT(FAMILIES['SHViT'].tiny, deploy=True).load_state_dict(state, strict=False)


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


# ----------------------------------------------------------------------------- bias-table resize
# A fixed 3x3 offset table and its bicubic 5x5 resize (a = -0.75, align_corners=False), computed
# once by hand-written cubic convolution (tests.helpers.bicubic_reference) and written out here:
# a changed resize kernel (torch's or mmext's) shows, whatever computes the references.
TABLE_3X3 = [[1.0, 0.0, -2.0], [4.0, 3.0, 0.5], [-1.0, 2.0, 5.0]]
BICUBIC_5X5 = [[0.808, 0.464544, -0.288, -1.554624, -2.427392],
               [2.647648, 2.210736, 1.236, -0.441816, -1.60264],
               [4.096, 3.792, 3.0, 1.398, 0.26],
               [1.016992, 1.658064, 2.604, 3.216216, 3.51368],
               [-1.804864, -0.421024, 1.904, 4.306784, 5.770688]]


def test_bias_table_resize_is_bicubic_golden():
    from mmext.models.attention import resize_bias_table
    table = torch.tensor(TABLE_3X3)
    flat = table.reshape(1, 9)
    golden = torch.tensor(BICUBIC_5X5, dtype=torch.float64)
    assert torch.allclose(bicubic_reference(table[None], (5, 5))[0], golden, atol=1e-9)
    resized = resize_bias_table(flat, 3, (5, 5))
    assert resized.shape == (1, 25) and resized.dtype == torch.float32
    assert torch.allclose(resized.reshape(5, 5).double(), golden, atol=2e-6)
    # the same size is the table itself; rows and columns resized differently (down and up)
    assert resize_bias_table(flat, 3, (3, 3)) is flat
    assert torch.allclose(resize_bias_table(flat, 3, (2, 4)).reshape(2, 4).double(),
                          bicubic_reference(table[None], (2, 4))[0], atol=2e-6)


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
