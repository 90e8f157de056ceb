import pytest
import torch
import torch.nn as nn

from mmext.models.layers import (BNLinear, ConvBN, ResidualConvBN, fuse_conv_bn, pad_to_multiple)
from tests.helpers import randomize_norms


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
    from mmext.models import onednn
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
