import copy

import pytest
import torch
import torch.nn as nn

from mmext.models.layers import (BNLinear, ConvBN, ResidualConvBN, fuse_conv_bn, pad_to_multiple)
from tests.helpers import max_rel_error, randomize_norms


def _check_fold(module, x, tol=1e-5):
    randomize_norms(module, random_eps=True).eval()
    with torch.no_grad():
        ref = module(x)
        module.switch_to_deploy()
        module.switch_to_deploy()  # idempotent
        out = module(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    assert torch.allclose(ref, out, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize('kwargs', [
    dict(in_channels=8, out_channels=16, kernel_size=3, stride=2, padding=1),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8),
    dict(in_channels=8, out_channels=12, kernel_size=1, bias=True),
    dict(in_channels=8, out_channels=12, kernel_size=3, padding=2, dilation=2, groups=4),
])
def test_conv_bn_folds(kwargs):
    _check_fold(ConvBN(**kwargs), torch.randn(2, 8, 13, 11))


def test_conv_bn_folds_syncbn():
    module = ConvBN(8, 16, 3, padding=1)
    module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    assert isinstance(module.bn, nn.SyncBatchNorm)
    _check_fold(module, torch.randn(2, 8, 9, 9))


def test_transposed_conv_bn_folds():
    conv = nn.ConvTranspose2d(8, 12, 2, stride=2, groups=4)
    bn = randomize_norms(nn.BatchNorm2d(12), random_eps=True).eval()
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        assert torch.allclose(bn(conv(x)), fuse_conv_bn(conv, bn)(x), atol=1e-5)


@pytest.mark.parametrize('conv', [False, True])
def test_bn_linear_folds(conv):
    x = torch.randn(4, 16, 5, 5) if conv else torch.randn(4, 16)
    _check_fold(BNLinear(16, 10, conv=conv), x)


def test_residual_conv_bn_folds_identity():
    module = ResidualConvBN(6, 3)
    x = torch.randn(2, 6, 7, 9)
    _check_fold(module, x)
    assert isinstance(module.m.conv, nn.Conv2d) and module.m.conv.groups == 6


def test_residual_conv_bn_is_residual():
    module = ResidualConvBN(4, 3, bn_weight_init=0.0).eval()
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(module(x), x)


def test_pad_to_multiple():
    x = torch.randn(1, 2, 13, 16)
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (16, 16) and (h, w) == (13, 16)
    assert torch.equal(padded[..., :h, :w], x)
    same, _ = pad_to_multiple(x[..., :12, :], 4)
    assert same.shape[-2:] == (12, 16)


def test_pad_to_multiple_skips_a_zero_pad_except_while_tracing():
    """A size that divides is returned as it is (F.pad would copy it), but a traced graph
    still pads: a branch on the example's size would be frozen into it."""
    x = torch.randn(1, 2, 12, 16)
    assert pad_to_multiple(x, 4)[0] is x
    traced = torch.jit.trace(lambda t: pad_to_multiple(t, 4)[0], x)
    odd = torch.randn(1, 2, 7, 10)
    assert traced(odd).shape[-2:] == (8, 12)
    assert torch.equal(traced(odd)[..., :7, :10], odd)


def _ran(fn):
    """The result of ``fn()`` and the names of the aten/mkldnn ops it ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, {e.name for e in prof.events()}


def _dtypes():
    from mmext.deploy.runners import native_bf16
    return [torch.float32] + ([torch.bfloat16] if native_bf16() else [])


@pytest.mark.parametrize('dtype', _dtypes())
def test_onednn_fused_ops_equal_the_plain_ops(dtype):
    """linear_add / conv_add / matmul / linear_gelu / conv_gelu compute the plain expression
    and, in inference on the CPU, as the single fused oneDNN op (no separate add, no addmm);
    where the op cannot take the case (stride 2, another memory format) the plain ops run."""
    from mmext import compat
    from mmext.models import onednn
    assert compat.onednn_fused(dtype), compat.onednn_status(dtype)  # probed here, not in _ran
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.manual_seed(0)
    lin = nn.Linear(36, 20).to(dtype)
    x, res = torch.randn(2, 50, 36, dtype=dtype), torch.randn(2, 50, 20, dtype=dtype)
    with torch.inference_mode():
        out, ops = _ran(lambda: onednn.linear_add(lin, x, res))
        torch.testing.assert_close(out, res + lin(x), **tol)
        assert 'mkldnn::_linear_pointwise' in ops and 'aten::add' not in ops, ops
        out, ops = _ran(lambda: onednn.matmul(x, lin.weight, lin.bias))
        torch.testing.assert_close(out, lin(x), **tol)
        assert 'mkldnn::_linear_pointwise' in ops and 'aten::addmm' not in ops, ops
        out, ops = _ran(lambda: onednn.linear_gelu(lin, x))
        torch.testing.assert_close(out, nn.functional.gelu(lin(x)), **tol)
        assert 'aten::gelu' not in ops, ops
        for k, fmt in [(1, torch.channels_last), (3, torch.channels_last),
                       (3, torch.contiguous_format)]:
            conv = nn.Conv2d(8, 8, k, padding=k // 2).to(dtype).to(memory_format=fmt)
            xm = torch.randn(2, 8, 9, 7, dtype=dtype).contiguous(memory_format=fmt)
            rm = torch.randn(2, 8, 9, 7, dtype=dtype).contiguous(memory_format=fmt)
            out, ops = _ran(lambda: onednn.conv_add(conv, xm, rm))
            torch.testing.assert_close(out, rm + conv(xm), **tol)
            assert 'mkldnn::_convolution_pointwise' in ops and 'aten::add' not in ops, ops
            out, ops = _ran(lambda: onednn.conv_gelu(conv, xm))
            torch.testing.assert_close(out, nn.functional.gelu(conv(xm)), **tol)
            assert 'aten::gelu' not in ops, ops
        # cases the fused op cannot take: the plain ops, same result
        strided = nn.Conv2d(8, 8, 3, stride=2, padding=1).to(dtype)
        xm = torch.randn(2, 8, 9, 7, dtype=dtype)
        rm = torch.randn(2, 8, 5, 4, dtype=dtype)
        torch.testing.assert_close(onednn.conv_add(strided, xm, rm), rm + strided(xm), **tol)
        other_fmt = torch.randn(2, 8, 9, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = nn.Conv2d(8, 8, 1).to(dtype)
        out, ops = _ran(lambda: onednn.conv_add(conv, xm, other_fmt))
        torch.testing.assert_close(out, other_fmt + conv(xm), **tol)
        assert 'aten::add' in ops


def test_onednn_ops_keep_autograd():
    """With gradients the plain ops run and gradients reach every input and parameter."""
    from mmext.models import onednn
    lin, conv = nn.Linear(6, 6), nn.Conv2d(6, 6, 3, padding=1)
    x, res = torch.randn(3, 6, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    xm = torch.randn(1, 6, 5, 5, requires_grad=True)
    rm = torch.randn(1, 6, 5, 5, requires_grad=True)
    (onednn.linear_add(lin, x, res).sum() + onednn.conv_add(conv, xm, rm).sum()
     + onednn.matmul(x, lin.weight, lin.bias).sum()).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0
               for t in (x, res, xm, rm, lin.weight, lin.bias, conv.weight))


def test_softmax_and_gelu_in_place_only_when_nothing_needs_the_input():
    """softmax_ / gelu_ give the plain values; they overwrite their input in inference, and
    leave it alone when autograd needs it (gradients still flow) or while tracing."""
    from mmext.models.attention import gelu_, softmax_
    x = torch.randn(2, 3, 5, 7)
    for fn, ref in ((softmax_, x.softmax(-1)), (gelu_, nn.functional.gelu(x))):
        y = x.clone()
        with torch.inference_mode():
            out = fn(y)
        assert torch.equal(out, ref) and out.data_ptr() == y.data_ptr()
        assert torch.equal(y, ref)  # written over
        leaf = x.clone().requires_grad_()
        z = leaf * 1
        out = fn(z)
        assert torch.allclose(out, ref) and torch.equal(z, x)  # input kept
        out.sum().backward()
        assert leaf.grad is not None
        traced = torch.jit.trace(lambda t: fn(t * 1), x)
        assert torch.allclose(traced(x), ref)


# ----------------------------------------------------------------------------- attention-bias cache
def _bias_attentions():
    """Every kind of bias-table attention (V2's plain and deployed), with random tables, each
    with an input: ``[(name, module, x)]``."""
    from mmext.models.efficientformer import Attention
    from mmext.models.efficientformer_v2 import Attention4D, Attention4DDownsample
    torch.manual_seed(0)
    mods = [('v1', Attention(32, key_dim=8, num_heads=4), (torch.randn(2, 24, 32), (4, 6))),
            ('v2', Attention4D(16, key_dim=8, num_heads=4), (torch.randn(2, 16, 4, 6), )),
            ('v2-deploy', Attention4D(16, key_dim=8, num_heads=4), (torch.randn(2, 16, 4, 6), )),
            ('v2-down', Attention4DDownsample(16, 16, key_dim=8, num_heads=4),
             (torch.randn(2, 16, 5, 9), ))]
    for name, attn, _ in mods:
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_(std=0.5)
        attn.eval()
        if name == 'v2-deploy':
            attn.switch_to_deploy()
    return mods


def _counting(attn, monkeypatch):
    """Count ``attn``'s bias computations."""
    calls = []
    compute = attn._compute_bias
    monkeypatch.setattr(attn, '_compute_bias', lambda *a: calls.append(a) or compute(*a))
    return calls


def _fresh_output(attn, x):
    """``attn``'s output from a copy with an empty cache (a deep copy keeps none)."""
    fresh = copy.deepcopy(attn)
    fresh.__dict__.pop('_compute_bias', None)  # not the counting wrapper of the original
    assert not fresh._bias_cache
    with torch.no_grad():
        return fresh(*x)


@pytest.mark.parametrize('index', range(4))
def test_bias_cache_reused_across_forwards_in_inference(index, monkeypatch):
    _, attn, x = _bias_attentions()[index]
    calls = _counting(attn, monkeypatch)
    with torch.no_grad():
        outs = [attn(*x) for _ in range(3)]
    with torch.inference_mode():
        outs.append(attn(*x))
    assert len(calls) == 1 and all(torch.equal(o, outs[0]) for o in outs)
    assert torch.equal(outs[0], _fresh_output(attn, x))
    attn(*x)  # gradients needed by the table: computed for this call, not cached
    attn.train()
    with torch.no_grad():
        attn(*x)
        attn(*x)  # training mode: not cached
    assert len(calls) == 4


def _replace_by_a_twin_parameter(attn):
    """A new Parameter over the same memory, written once: same data_ptr and version as the
    stamped one (only its identity differs)."""
    old = attn.attention_biases
    new = nn.Parameter(old.data)
    new.mul_(-1)
    assert new.data_ptr() == old.data_ptr() and new._version == old._version
    attn.attention_biases = new


def _two_data_swaps(attn):
    """``.data`` replaced twice: the first tensor's memory is kept by the cache, so the second
    cannot land at the stamped address."""
    p = attn.attention_biases
    p.data = p.data * 2
    p.data = torch.randn(p.shape)


EVENTS = {  # name -> (change, whether it empties the cache at once, whether values change)
    'in-place mul': (lambda attn: attn.attention_biases.mul_(-1), False, True),
    'copy_ into the table': (lambda attn: attn.attention_biases.copy_(
        torch.randn(attn.attention_biases.shape)), False, True),
    'new tensor as .data': (lambda attn: setattr(
        attn.attention_biases, 'data', attn.attention_biases.data * -1), False, True),
    'two .data swaps': (_two_data_swaps, False, True),
    'twin parameter': (_replace_by_a_twin_parameter, False, True),
    'load_state_dict': (lambda attn: attn.load_state_dict(
        {k: torch.rand_like(v) + 0.5 if v.is_floating_point() else v  # variances > 0
         for k, v in attn.state_dict().items()}), True, True),
    'to(float64)': (lambda attn: attn.to(torch.float64), True, False),
    'eval()': (lambda attn: attn.eval(), True, False),
    'train().eval()': (lambda attn: attn.train().eval(), True, False),
    '.data write, then eval()': (
        lambda attn: (attn.attention_biases.data.mul_(-1), attn.eval()), True, True),
}


@pytest.mark.parametrize('event', list(EVENTS))
@pytest.mark.parametrize('index', range(4))
def test_bias_cache_invalidated_by_every_event(index, event, monkeypatch):
    """After each change the output equals a fresh copy's, computed once and cached again;
    load_state_dict, ``.to()`` and train()/eval() empty the cache at once."""
    _, attn, x = _bias_attentions()[index]
    change, empties, changes_values = EVENTS[event]
    with torch.no_grad():
        before = attn(*x)
        assert len(attn._bias_cache) == 1
        change(attn)
        assert len(attn._bias_cache) == (0 if empties else 1)
        x = tuple(t.to(attn.attention_biases.dtype) if torch.is_tensor(t) else t for t in x)
        calls = _counting(attn, monkeypatch)
        after = attn(*x)
        assert torch.equal(attn(*x), after) and len(calls) == 1
    assert torch.equal(after, _fresh_output(attn, x))
    assert (max_rel_error(after.to(before.dtype), before) < 1e-5) != changes_values


def _optimizers():
    kinds = [('sgd', lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
             ('adam-foreach', lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=True))]
    try:  # torch's fused optimizers write without bumping version counters
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True)
        kinds.append(('adam-fused', lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True)))
    except RuntimeError:  # no fused CPU Adam in this torch
        pass
    return kinds


@pytest.mark.parametrize('make_opt', [m for _, m in _optimizers()],
                         ids=[n for n, _ in _optimizers()])
@pytest.mark.parametrize('index', range(4))
def test_bias_cache_invalidated_by_an_optimizer_step_in_eval_mode(index, make_opt):
    """Fine-tuning in eval mode: the grad-enabled forward computes its own bias; after the step a
    no-grad forward does not return the bias of the old table."""
    _, attn, x = _bias_attentions()[index]
    opt = make_opt(list(attn.parameters()))
    with torch.no_grad():
        before = attn(*x)
    attn(*x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        after = attn(*x)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh_output(attn, x))


def test_no_tensor_comparison_in_an_eval_forward():
    """The cache check reads no tensor: no aten::equal (a host sync per layer on CUDA) in
    eval forwards of V1, V2 and deployed V2, cached or not."""
    from mmext.models import EfficientFormer, EfficientFormerV2
    x = torch.randn(1, 3, 64, 96)
    models = [EfficientFormer('l1').eval(), EfficientFormerV2('s0').eval(),
              EfficientFormerV2('s0').eval().switch_to_deploy()]
    with torch.no_grad():
        for model in models:
            for _ in range(2):  # filling the cache, then using it
                _, ops = _ran(lambda: model(x))
                assert 'aten::equal' not in ops
            assert any(getattr(m, '_bias_cache', None) for m in model.modules())
        _, ops = _ran(lambda: torch.equal(x, x))
    assert 'aten::equal' in ops  # the profiler would see one


def test_bias_not_cached_while_tracing_or_for_inference_tensors():
    _, attn, x = _bias_attentions()[1]
    with torch.no_grad():
        traced = torch.jit.trace(attn, x, check_trace=False)
        assert not attn._bias_cache
        attn.attention_biases.mul_(-1)  # the traced graph reads the parameter, not a constant
        assert torch.allclose(traced(*x), attn(*x), atol=1e-6)
    with torch.inference_mode():
        from mmext.models.efficientformer import Attention
        built = Attention(32, key_dim=8, num_heads=4).eval()  # inference-tensor parameters
        x = (torch.randn(2, 24, 32), (4, 6))
        out = built(*x)
        assert not built._bias_cache and torch.equal(out, built(*x))
