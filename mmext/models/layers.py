"""Fusable building blocks shared by every mmext backbone family.

Each block trains with BatchNorm and folds it away in :meth:`switch_to_deploy`, after which it is a
single convolution or linear layer that gives the same outputs (up to float rounding):

* :class:`ConvBN`           ``Conv2d -> BN``                      -> one ``Conv2d`` with bias
* :class:`BNLinear`         ``BN -> Linear`` (or ``BN -> 1x1 conv``) -> one ``Linear`` / ``Conv2d``
* :class:`ResidualConvBN`   ``x + BN(DWConv(x))``                 -> one depthwise ``Conv2d``
* :class:`Residual`         ``x + drop_path(m(x))``; folding happens in ``m``
* :func:`fold_output_scale` / :func:`fold_layer_norm_affine`: LayerScale and LayerNorm affine parts
  folded into the conv/linear next to them

:class:`FusedGELUMlp` (after ``switch_to_deploy`` its fc1 + GELU, and fc2 + a residual, run as
the single oneDNN ops of :mod:`mmext.models.onednn`). The attention pieces more than one family uses are in
:mod:`mmext.models.attention`.

``switch_to_deploy`` is idempotent; backbones call it on every submodule, children first.
BatchNorm here means any ``torch.nn.modules.batchnorm._BatchNorm``, SyncBatchNorm included, so a
model converted to SyncBN folds the same way.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from mmext.models.onednn import conv_add, conv_gelu, linear_add, linear_gelu
from mmext.utils import is_tracing


def _bn_scale_shift(bn):
    """Return ``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode (per channel)."""
    std = (bn.running_var + bn.eps).sqrt()
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv, bn):
    """Fold ``bn`` (applied after ``conv``) into a new ``Conv2d`` / ``ConvTranspose2d`` with bias."""
    scale, shift = _bn_scale_shift(bn)
    transposed = isinstance(conv, nn.ConvTranspose2d)
    fused = (nn.ConvTranspose2d if transposed else nn.Conv2d)(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
        device=conv.weight.device, dtype=conv.weight.dtype,
        **({'output_padding': conv.output_padding} if transposed else {}))
    if transposed:  # weight is (C_in, C_out / groups, kh, kw)
        w = conv.weight.view(conv.groups, conv.in_channels // conv.groups, -1, *conv.kernel_size)
        w = w * scale.view(conv.groups, 1, -1, 1, 1)
        fused.weight.copy_(w.view_as(conv.weight))
    else:
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_bn_linear(bn, linear):
    """Fold ``bn`` (applied before ``linear`` or a 1x1 ``Conv2d``) into a new layer with bias."""
    scale, shift = _bn_scale_shift(bn)
    is_conv = isinstance(linear, nn.Conv2d)
    if is_conv and (linear.kernel_size != (1, 1) or linear.groups != 1):
        raise ValueError('a BatchNorm can only be folded into a following 1x1 dense conv')
    weight = linear.weight.flatten(1) if is_conv else linear.weight  # (out, in)
    bias = linear.bias if linear.bias is not None else weight.new_zeros(weight.shape[0])
    if is_conv:
        fused = nn.Conv2d(linear.in_channels, linear.out_channels, 1, stride=linear.stride,
                          bias=True, device=weight.device, dtype=weight.dtype)
    else:
        fused = nn.Linear(linear.in_features, linear.out_features, bias=True,
                          device=weight.device, dtype=weight.dtype)
    fused.weight.copy_((weight * scale[None, :]).view_as(fused.weight))
    fused.bias.copy_(bias + weight @ shift)
    return fused


@torch.no_grad()
def fold_output_scale(layer, gamma):
    """Fold ``gamma * layer(x)`` (a per-output-channel scale, e.g. LayerScale) into ``layer``.

    ``layer`` is a ``Conv2d`` or ``Linear``; its weight rows and bias are scaled in place.
    """
    layer.weight.mul_(gamma.view(-1, *([1] * (layer.weight.ndim - 1))))
    if layer.bias is not None:
        layer.bias.mul_(gamma)


@torch.no_grad()
def fold_layer_norm_affine(norm, linears):
    """Fold a ``LayerNorm``'s affine part into the ``Linear`` layers that read its output.

    ``Linear(LN(x)) = (W * g) norm(x) + (W b + c)``; returns a ``LayerNorm`` without affine part
    (same ``eps``) to replace ``norm``. The linears are changed in place and need a bias.
    """
    if not norm.elementwise_affine:
        return norm
    for linear in linears:
        if norm.bias is not None:
            linear.bias.add_(linear.weight @ norm.bias)
        linear.weight.mul_(norm.weight[None, :])
    return nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)


class ConvBN(nn.Module):
    """``Conv2d`` followed by ``BatchNorm2d``; folds into one conv.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H', W')`` with ``H' = floor((H + 2p - k) / s) + 1``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        bias (bool): conv bias (EfficientFormer's MLP convs have one before their BN).
        bn_weight_init (float): initial BN gamma; 0 makes a residual branch start as identity.
        transposed (bool): a ``ConvTranspose2d`` instead (``H' = (H - 1) * s - 2p + k``).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, bn_weight_init=1.0, transposed=False):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride, padding,
                         groups=groups, bias=bias, dilation=dilation)
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)

    def forward(self, x):
        return self.bn(self.conv(x))

    def forward_residual(self, x, residual):
        """``residual + self(x)``; once the BN is folded, one oneDNN convolution with the sum as
        post-op where it can (:func:`~mmext.models.onednn.conv_add`)."""
        if isinstance(self.bn, nn.Identity):
            return conv_add(self.conv, x, residual)
        return residual + self(x)

    @torch.no_grad()
    def switch_to_deploy(self):
        if isinstance(self.bn, _BatchNorm):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class BNLinear(nn.Module):
    """``BatchNorm`` followed by ``Linear`` (tokens) or a 1x1 ``Conv2d`` (maps); folds into one.

    Shapes: ``(N, C_in) -> (N, C_out)`` for ``conv=False``;
    ``(N, C_in, H, W) -> (N, C_out, H, W)`` for ``conv=True``.
    """

    def __init__(self, in_features, out_features, bias=True, conv=False):
        super().__init__()
        if conv:
            self.bn = nn.BatchNorm2d(in_features)
            self.linear = nn.Conv2d(in_features, out_features, 1, bias=bias)
        else:
            self.bn = nn.BatchNorm1d(in_features)
            self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x):
        return self.linear(self.bn(x))

    @torch.no_grad()
    def switch_to_deploy(self):
        if isinstance(self.bn, _BatchNorm):
            self.linear = fuse_bn_linear(self.bn, self.linear)
            self.bn = nn.Identity()


class ResidualConvBN(nn.Module):
    """Residual depthwise ``Conv-BN``: ``x + BN(DWConv_kxk(x))``; folds into one depthwise conv.

    The identity becomes a 1 at the centre tap of each channel's kernel.
    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels, kernel_size=3, bn_weight_init=1.0):
        super().__init__()
        self.m = ConvBN(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels,
                        bn_weight_init=bn_weight_init)
        self.deploy = False

    def forward(self, x):
        if self.deploy:
            return self.m(x)
        return x + self.m(x)

    @torch.no_grad()
    def switch_to_deploy(self):
        if self.deploy:
            return
        self.m.switch_to_deploy()
        k = self.m.conv.kernel_size
        self.m.conv.weight[:, 0, k[0] // 2, k[1] // 2] += 1
        self.deploy = True


class FusedGELUMlp(nn.Sequential):
    """``fc1 -> act (GELU) -> fc2`` (an ``nn.Sequential``: same module names and checkpoint
    keys). ``fc1``/``fc2`` are ``Conv2d``/``Linear`` layers or, with a BatchNorm that folds,
    :class:`BNLinear`/:class:`ConvBN`. After :meth:`switch_to_deploy` (BNs folded) ``fc1`` + an
    exact GELU run as :func:`~mmext.models.onednn.conv_gelu` / ``linear_gelu``, and
    :meth:`forward_residual` adds the residual as ``fc2``'s post-op.

    Shapes: those of ``fc1`` then ``fc2``.
    """

    deploy = False

    @staticmethod
    def _plain(layer):
        """The single ``Conv2d``/``Linear`` that ``layer`` is or holds once folded, else None."""
        if isinstance(layer, BNLinear):
            layer = layer.linear if isinstance(layer.bn, nn.Identity) else None
        elif isinstance(layer, ConvBN):
            layer = layer.conv if isinstance(layer.bn, nn.Identity) else None
        return layer if type(layer) in (nn.Conv2d, nn.Linear) else None

    def _first(self):
        if type(self.act) is nn.GELU and self.act.approximate == 'none':
            return self._plain(self.fc1)
        return None

    def switch_to_deploy(self):
        for layer in (self.fc1, self.fc2):
            if isinstance(layer, (BNLinear, ConvBN)):
                layer.switch_to_deploy()
        self.deploy = self._first() is not None

    def hidden(self, x):
        """``act(fc1(x))``, one oneDNN op after :meth:`switch_to_deploy` where it can."""
        if self.deploy:
            fc1 = self._first()
            return (conv_gelu if type(fc1) is nn.Conv2d else linear_gelu)(fc1, x)
        return self.act(self.fc1(x))

    def forward(self, x):
        return self.fc2(self.hidden(x))

    def forward_residual(self, x, residual):
        """``residual + self(x)``; after :meth:`switch_to_deploy` the sum is ``fc2``'s post-op
        (:func:`~mmext.models.onednn.conv_add` / :func:`~mmext.models.onednn.linear_add`)."""
        fc2 = self._plain(self.fc2) if self.deploy else None
        if fc2 is not None:
            add = conv_add if type(fc2) is nn.Conv2d else linear_add
            return add(fc2, self.hidden(x), residual)
        return residual + self(x)


def drop_path(x, drop_prob=0.0, training=False):
    """Stochastic depth per sample (identity at inference)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class Residual(nn.Module):
    """``x + drop_path(m(x))``. Shapes are those of ``m``, which must keep its input's shape.

    Without stochastic depth, an ``m`` with ``forward_residual(x, residual)`` computes the sum
    itself (e.g. as its last conv's post-op in deploy).
    """

    def __init__(self, m, drop_path_rate=0.0):
        super().__init__()
        self.m = m
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        if hasattr(self.m, 'forward_residual') and not (self.training and self.drop_path_rate):
            return self.m.forward_residual(x, x)
        return x + drop_path(self.m(x), self.drop_path_rate, self.training)


class LayerScale(nn.Module):
    """Per-channel learnable scale, for ``(N, C, H, W)`` maps (``dim=1``) or ``(N, L, C)`` tokens."""

    def __init__(self, channels, init_value=1e-5, channel_dim=-1):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(channels))
        self.channel_dim = channel_dim

    def forward(self, x):
        if self.channel_dim == 1:
            return x * self.gamma.view(1, -1, *([1] * (x.ndim - 2)))
        return x * self.gamma


def pad_to_multiple(x, multiple):
    """Zero-pad an ``(N, C, H, W)`` map at the bottom/right so H and W divide by ``multiple``.

    Returns the padded map and the original ``(H, W)``; crop back with ``x[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    # While tracing always pad (by zero when it divides): a branch on the size would be frozen
    # into the graph. Otherwise skip a zero pad, which F.pad runs as a full copy.
    if is_tracing() or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (h, w)


