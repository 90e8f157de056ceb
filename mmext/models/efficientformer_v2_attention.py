"""EfficientFormerV2's attention blocks (the family's other file,
:mod:`mmext.models.efficientformer_v2`, builds the backbone from them): :class:`Attention4D` (MHSA with talking heads, a local value and
offset biases, optionally at stride 2), :class:`LocalGlobalQuery` and :class:`Attention4DDownsample`
(attention downsampling). Their deploy paths are described in the family's module docstring.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.models.attention import (AttentionBiasTable, attention_with_bias, gelu_, inplace_ok,
                                    softmax_)
from mmext.models.layers import ConvBN


def _proj(proj, x, residual):
    """``proj(x)``, plus ``residual`` when given (as ``proj``'s post-op once folded)."""
    return proj(x) if residual is None else proj.forward_residual(x, residual)


def _act(act, x):
    """``act(x)`` for a temporary ``x`` nothing else reads: an exact GELU overwrites it
    (:func:`~mmext.models.attention.gelu_`; the map before ``proj`` is the largest of the
    block at detection sizes)."""
    if type(act) is nn.GELU and act.approximate == 'none':
        return gelu_(x)
    return act(x)


class Attention4D(AttentionBiasTable):
    """MHSA on ``(N, C, H, W)`` maps with talking heads, a local value and offset biases.

    ``q, k, v`` are 1x1 Conv-BNs; ``scores = q k^T / sqrt(key_dim) + bias``;
    ``attn = talking_head2(softmax(talking_head1(scores)))``; ``out = attn v + v_local`` with
    ``v_local`` a 3x3 depthwise Conv-BN of ``v`` (as a map); then ``GELU -> 1x1 Conv-BN``.
    The talking heads mix heads around the softmax, so the scores are computed explicitly (no
    fused attention kernel fits).

    With ``stride=2`` (stride attention) a 3x3 stride-2 depthwise Conv-BN shrinks the map first
    and the output is upsampled x2 (bilinear) and cropped to the input size.

    Args:
        dim (int): channels in and out.
        resolution (int): side of the token grid the bias table was learned on (after the
            stride conv).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``; attention over ``ceil(H/s) * ceil(W/s)`` tokens.
    """

    def __init__(self, dim, key_dim=32, num_heads=8, attn_ratio=4, resolution=7, stride=1):
        super().__init__(num_heads, resolution)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.stride = stride
        qk_dim, v_dim = num_heads * key_dim, num_heads * self.value_dim
        self.stride_conv = (ConvBN(dim, dim, 3, stride, 1, groups=dim, bias=True)
                            if stride > 1 else None)
        self.q = ConvBN(dim, qk_dim, bias=True)
        self.k = ConvBN(dim, qk_dim, bias=True)
        self.v = ConvBN(dim, v_dim, bias=True)
        self.v_local = ConvBN(v_dim, v_dim, 3, 1, 1, groups=v_dim, bias=True)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = nn.GELU()
        self.proj = ConvBN(v_dim, dim, bias=True)
        self.deploy = False

    def switch_to_deploy(self):
        """Run the talking heads as batched matmuls, ``talking_head1`` folded into the bias."""
        self.deploy = True
        self._bias_cache.clear()

    def _bias_sources(self):
        sources = super()._bias_sources()
        if self.deploy:
            sources += (self.talking_head1.weight, self.talking_head1.bias)
        return sources

    def _compute_bias(self, q_size, k_size, q_stride):
        bias = super()._compute_bias(q_size, k_size, q_stride)
        if not self.deploy:
            return bias
        # talking_head1(scores + bias) = W1 scores + (W1 bias + b1): the second term per grid
        th = self.talking_head1
        heads = self.num_heads
        folded = torch.addmm(th.bias.float()[:, None], th.weight.float().view(heads, heads),
                             bias.float().reshape(heads, -1))
        return folded.view(bias.shape).to(bias.dtype)

    def _talking_heads_attention(self, scores, bias):
        """Deploy: ``talking_head2(softmax(talking_head1(scores + bias)))`` less
        ``talking_head2``'s bias (added by the caller after the value product, where it is
        ``b2[head] * sum_j v[.., j]`` per channel, not a pass over the scores), with each 1x1
        conv over heads as one batched matmul on ``(N, heads, hw*hw)`` (``bias`` has
        ``talking_head1`` folded in, see :meth:`_compute_bias`). A 1x1 conv over 8 channels of an
        ``hw x hw`` map is memory-bound: as a conv it also initialises its output with the
        bias (fp32, an extra pass) and, with channels_last weights (bf16), converts the score
        map to NHWC and back around each conv (3 copies of the largest tensor per block, 27%
        of EfficientFormerV2-S0 at 800x1344 in bf16). The matmuls keep the layout contiguous.
        """
        n, heads, tokens = scores.shape[:3]
        flat = scores.reshape(n, heads, tokens * tokens)
        w1 = self.talking_head1.weight.view(1, heads, heads).expand(n, heads, heads)
        w2 = self.talking_head2.weight.view(1, heads, heads).expand(n, heads, heads)
        mixed = torch.baddbmm(bias.reshape(1, heads, tokens * tokens), w1, flat)
        attn = softmax_(mixed.view(n, heads, tokens, tokens)).view(n, heads, tokens * tokens)
        # the scores are used up: the second mix goes into their memory, not a new tensor
        # (inplace_ok first: no pointer test while compiling, it breaks the graph)
        if inplace_ok(scores) and flat.data_ptr() == scores.data_ptr():
            return torch.bmm(w2, attn, out=flat).view(n, heads, tokens, tokens)
        return torch.bmm(w2, attn).view(n, heads, tokens, tokens)

    def forward(self, x, residual=None):
        """``proj(GELU(attention))``, plus ``residual`` when given (fused into ``proj`` in
        deploy, see :meth:`~mmext.models.layers.ConvBN.forward_residual`)."""
        n, _, height, width = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, w = x.shape[-2:]
        tokens = h * w
        q = self.q(x).reshape(n, self.num_heads, self.key_dim, tokens).transpose(2, 3)
        k = self.k(x).reshape(n, self.num_heads, self.key_dim, tokens)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(n, self.num_heads, self.value_dim, tokens)  # a view of the map
        bias = self.attention_bias((h, w), dtype=q.dtype)  # (heads, hw, hw)
        if self.deploy:
            attn = self._talking_heads_attention((q * self.scale) @ k, bias)
            # talking_head2's bias b2 adds b2[head] to every weight: b2[head] * sum_j v[c, j]
            v_local = v_local + (self.talking_head2.bias.view(1, -1, 1, 1) * v.sum(-1, True)
                                 ).reshape(n, self.num_heads * self.value_dim, 1, 1)
        else:
            scores = ((q * self.scale) @ k).add_(bias)  # (N, heads, hw, hw)
            attn = self.talking_head2(self.talking_head1(scores).softmax(dim=-1))
        # (v attn^T) is (N, heads, value_dim, hw): already the map's layout, so no transpose copy
        out = (v @ attn.transpose(2, 3)).reshape(n, self.num_heads * self.value_dim, h, w)
        # v_local first: a sum takes its first operand's memory format, so with channels_last
        # layers (bf16) the upsampling and proj get NHWC and need no conversion copy
        out = v_local + out
        if self.stride_conv is not None:
            out = F.interpolate(out, scale_factor=self.stride, mode='bilinear',
                                align_corners=False)
            # odd grid: drop the extra bottom/right line (a no-op on even grids; unconditional so
            # that ONNX tracing keeps it for every size)
            out = out[..., :height, :width]
        return _proj(self.proj, _act(self.act, out), residual)


class LocalGlobalQuery(nn.Module):
    """Queries of attention downsampling: ``1x1 Conv-BN(DWConv3x3_s2(x) + x[::2, ::2])``.

    The local part is a 3x3 stride-2 depthwise conv, the global part keeps every other token
    (the authors' ``AvgPool2d(1, 2)``). :meth:`switch_to_deploy` folds the subsampling into the
    depthwise conv's centre tap, which reads exactly ``x[2i, 2j]``.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.local = nn.Conv2d(in_dim, in_dim, 3, 2, 1, groups=in_dim)
        self.proj = ConvBN(in_dim, out_dim, bias=True)
        self.deploy = False

    def forward(self, x):
        q = self.local(x)
        if not self.deploy:
            q = q + x[:, :, ::2, ::2]
        return self.proj(q)

    @torch.no_grad()
    def switch_to_deploy(self):
        if not self.deploy:
            self.local.weight[:, 0, 1, 1] += 1
            self.deploy = True


class Attention4DDownsample(AttentionBiasTable):
    """Attention downsampling: queries on the stride-2 grid, keys and values on the full map.

    ``q`` from :class:`LocalGlobalQuery`, ``k, v`` 1x1 Conv-BNs of the input;
    ``out = softmax(q k^T / sqrt(key_dim) + bias) v + v_local`` with ``v_local`` a 3x3 stride-2
    depthwise Conv-BN of ``v``; then ``GELU -> 1x1 Conv-BN`` to ``out_dim``. No talking heads,
    so it runs as :func:`~mmext.models.attention.attention_with_bias` (``attn_impl``).

    Args:
        resolution (int): side of the key grid the bias table was learned on (14 at 224).

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, dim, out_dim, key_dim=16, num_heads=8, attn_ratio=4, resolution=14,
                 attn_impl='auto'):
        super().__init__(num_heads, resolution)
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        qk_dim, v_dim = num_heads * key_dim, num_heads * self.value_dim
        self.q = LocalGlobalQuery(dim, qk_dim)
        self.k = ConvBN(dim, qk_dim, bias=True)
        self.v = ConvBN(dim, v_dim, bias=True)
        self.v_local = ConvBN(v_dim, v_dim, 3, 2, 1, groups=v_dim, bias=True)
        self.act = nn.GELU()
        self.proj = ConvBN(v_dim, out_dim, bias=True)

    def forward(self, x, residual=None):
        """``proj(GELU(attention))``, plus ``residual`` when given (as in :class:`Attention4D`)."""
        n, _, h, w = x.shape
        q = self.q(x)
        hq, wq = q.shape[-2:]
        q = q.reshape(n, self.num_heads, self.key_dim, hq * wq).transpose(2, 3)
        k = self.k(x).reshape(n, self.num_heads, self.key_dim, h * w).transpose(2, 3)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(n, self.num_heads, self.value_dim, h * w).transpose(2, 3)
        bias = self.attention_bias((hq, wq), (h, w), q_stride=2, dtype=q.dtype)
        out = attention_with_bias(q, k, v, bias, self.scale, self.attn_impl)
        out = v_local + out.transpose(2, 3).reshape(n, self.num_heads * self.value_dim, hq, wq)
        return _proj(self.proj, _act(self.act, out), residual)
