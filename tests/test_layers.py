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
