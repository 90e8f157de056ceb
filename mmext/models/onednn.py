"""Inference-only fusions of a conv/linear with what follows it, as single oneDNN ops on the CPU.

Each function computes a plain expression (``F.gelu(conv(x))``, ``residual + linear(x)``, ...)
and, on the CPU in inference, runs it as one oneDNN primitive with a post-op
(``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels
``torch.compile`` fuses to). The post-op is applied while the output block is still in cache
instead of in a second pass over the whole map, and the linear versions also skip the copy of
the broadcast bias into the output that ``addmm`` does first (for a 36-channel output of 50k
tokens that copy alone is as slow as the matmul).

Anywhere else (autograd, tracing/ONNX export, ``torch.compile``, CUDA, mixed dtypes,
shapes/layouts the op does not take, and a torch whose fused ops are missing or disagree with the
plain ops: :func:`mmext.compat.onednn_fused`, probed once per process) they run the plain ops as
written, so a model that calls them exports and trains as before. The ops' signatures are known to
:mod:`mmext.compat.torch_ops` only.

Measured on a 2-core Xeon with AMX, 1 thread, bf16, EdgeViT-XXS stage-1 sizes (16 x 3136 tokens):
conv/linear + exact GELU ~1.9-2.2x the two ops; linear + residual add 1.1 vs 1.6-3.4 ms.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.compat import cpu_autocast_dtype, onednn_fused
from mmext.compat.torch_ops import mkldnn_conv, mkldnn_conv_add, mkldnn_linear, mkldnn_linear_add
from mmext.utils import is_tracing


def fused_ok(layer, x):
    """Whether ``layer`` (an ``nn.Conv2d`` or ``nn.Linear``) may run as a oneDNN op on ``x``."""
    if type(layer) is nn.Conv2d:
        if x.dim() != 4 or layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
            return False
    elif type(layer) is not nn.Linear or x.dim() < 2:
        return False
    return _tensors_ok(x, layer.weight, layer.bias)


def _tensors_ok(x, weight, bias):
    if (x.device.type != 'cpu' or x.dtype != weight.dtype
            or x.dtype not in (torch.float32, torch.bfloat16)
            or (bias is not None and bias.dtype != x.dtype)):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    if is_tracing():
        return False
    autocast_dtype = cpu_autocast_dtype()
    if autocast_dtype is not None and x.dtype != autocast_dtype:
        return False  # autocast would run the layer in its own dtype
    return onednn_fused(x.dtype)


def _conv_args(conv):
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def conv_gelu(conv, x):
    """``F.gelu(conv(x))`` (exact GELU); one oneDNN convolution with the GELU as post-op
    where :func:`fused_ok` (GELU was ~40% of EfficientFormerV2-S0 in bf16 at 224)."""
    if fused_ok(conv, x):
        return mkldnn_conv(x, conv.weight, conv.bias, *_conv_args(conv), 'gelu')
    return F.gelu(conv(x))


def conv_relu(conv, x):
    """``F.relu(conv(x))``; one oneDNN convolution with the ReLU as post-op where
    :func:`fused_ok`."""
    if fused_ok(conv, x):
        return mkldnn_conv(x, conv.weight, conv.bias, *_conv_args(conv), 'relu')
    return F.relu(conv(x))


def linear_gelu(linear, x):
    """``F.gelu(linear(x))`` (exact GELU); one oneDNN matmul with the GELU as post-op where
    :func:`fused_ok`."""
    if fused_ok(linear, x):
        return mkldnn_linear(x, linear.weight, linear.bias, 'gelu')
    return F.gelu(linear(x))


def matmul(x, weight, bias=None):
    """``F.linear(x, weight, bias)``; one oneDNN matmul (no bias copy) where it can."""
    if x.dim() >= 2 and _tensors_ok(x, weight, bias):
        return mkldnn_linear(x, weight, bias, 'none')
    return F.linear(x, weight, bias)


def _residual_ok(layer, x, residual, out_shape):
    return (fused_ok(layer, x) and residual.dtype == x.dtype and residual.device == x.device
            and tuple(residual.shape) == tuple(out_shape))


def linear_add(layer, x, residual):
    """``residual + layer(x)`` for an ``nn.Linear``; one oneDNN matmul with the sum as post-op
    where :func:`fused_ok` and ``residual`` is contiguous with the output's shape and dtype."""
    out_shape = (*x.shape[:-1], layer.out_features)
    if _residual_ok(layer, x, residual, out_shape) and residual.is_contiguous():
        return mkldnn_linear_add(x.contiguous(), residual, layer.weight, layer.bias)
    return residual + layer(x)


def conv_add(conv, x, residual):
    """``residual + conv(x)`` for an ``nn.Conv2d`` keeping the spatial size (stride 1, 'same'
    padding); one oneDNN convolution with the sum as post-op where :func:`fused_ok` and
    ``residual`` has the output's shape, dtype and memory format (that of ``x``)."""
    out_shape = (x.shape[0], conv.out_channels, *x.shape[2:])
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous() else torch.contiguous_format
    if (_residual_ok(conv, x, residual, out_shape) and tuple(conv.stride) == (1, 1)
            and all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation,
                                                            conv.kernel_size))
            and x.is_contiguous(memory_format=fmt) and residual.is_contiguous(memory_format=fmt)):
        return mkldnn_conv_add(x, residual, conv.weight, conv.bias, *_conv_args(conv))
    return residual + conv(x)
