"""EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers.

Pan et al., ECCV 2022.

Four stages at strides 4/8/16/32. Each stage starts with a non-overlapping patch embedding
(``k x k`` conv with stride ``k``, then LayerNorm over channels; ``k = 4`` for the stem, 2 after)
and stacks local-global-local (LGL) blocks:

1. **local aggregation** (stages 1-3): ``x + DW3x3(x)`` (conditional position encoding), then
   ``x + PW(DW5x5(PW(BN(x))))`` and a pointwise MLP ``x + PW(GELU(PW(BN(x))))``, all NCHW;
2. **global sparse attention**: ``x + DW3x3(x)``, then on tokens ``x + Attn(LN(x))`` and
   ``x + MLP(LN(x))``. The attention's queries/keys/values come from *delegate tokens*, one per
   ``r x r`` window (the window's top-left token, as the authors' ``AvgPool2d(kernel_size=1,
   stride=r)`` picks it; ``r`` is the stage's sample ratio 4/2/2/1);
3. **local propagation**: the attended delegates are spread back over their windows by a
   depthwise ``r x r`` stride-``r`` transposed conv, then LayerNorm and the output projection.

Stage 4 (``r = 1``) has no local aggregation and plain multi-head self-attention.

**Any input size.** Outputs have ``ceil(H / s) x ceil(W / s)`` positions for strides
``s = 4, 8, 16, 32``: each patch embedding zero-pads its input at the bottom/right to a multiple
of its kernel. The sparse attention on an ``H x W`` map takes the delegates at rows/columns
``0, r, 2r, ...`` (``ceil(H/r) x ceil(W/r)`` of them), which is exactly sampling the map padded
to a multiple of ``r``; sampling reads no padded position, so padding cannot distort the
delegates (no averaging happens, unlike ``AvgPool2d(kernel_size=r)``). The transposed conv then
produces the padded size ``r * ceil(H/r) x r * ceil(W/r)`` and is cropped back to ``H x W``.
When ``r`` divides the map size (every stage at 224x224) this is the authors' computation.

**Deploy.** The only BatchNorms are those of local aggregation, and each precedes a 1x1 conv
(:class:`~mmext.models.layers.BNLinear`), so :meth:`switch_to_deploy` folds all of them. It also
runs local propagation, its LayerNorm and the projection as one matmul on the delegates and one
multiply in token layout instead of the depthwise transposed conv and two passes over every
token (``GlobalSparseAttention._propagate_project``: same parameters, same outputs), and,
on the CPU in inference, each MLP's ``fc1`` + GELU and every residual sum after a conv/linear
as single oneDNN ops (:mod:`mmext.models.onednn`). The state dict keys do not change: the
folded propagation weights are derived, not saved (folded by ``switch_to_deploy()``, again after
``load_state_dict`` or any other change of the parameters, so a ``deploy=True`` model loading a
fused checkpoint computes what the switched model did).

In every mode the pre-attention LayerNorm runs on the delegates only (it is per token, and the
attention reads nothing else): 1/16 of the tokens in stage 1, 1/4 in stages 2-3.

Module names follow the paper; :mod:`mmext.checkpoints.edgevit` maps the authors' checkpoint keys.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.errors import ConfigError
from mmext.models.base import BaseBackbone, BaseStage
from mmext.models import onednn
from mmext.models.attention import (DerivedCache, SourceStamp, caching_ok, inplace_ok, softmax_,
                                    use_sdpa)
from mmext.models.layers import BNLinear, FusedGELUMlp, drop_path, pad_to_multiple
from mmext.models.onednn import conv_add
from mmext.registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map (each position on its own)."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: zero-pad to a multiple of ``patch_size``, conv, LayerNorm.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H / p), ceil(W / p))``.
    """

    def __init__(self, in_channels, out_channels, patch_size):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, out_channels, patch_size, stride=patch_size)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x):
        x, _ = pad_to_multiple(x, self.patch_size)
        return self.norm(self.proj(x))


def _mlp(dim, hidden, conv):
    """``fc1 -> GELU -> fc2``: on NCHW maps with BN-prefixed 1x1 convs, or on tokens with Linear."""
    if conv:
        fc1, fc2 = BNLinear(dim, hidden, conv=True), nn.Conv2d(hidden, dim, 1)
    else:
        fc1, fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
    return FusedGELUMlp(OrderedDict(fc1=fc1, act=nn.GELU(), fc2=fc2))


class LocalAggregation(nn.Module):
    """Local aggregation: position encoding, ``BN -> PW -> DW5x5 -> PW``, then a conv MLP.

    ``x = x + pos_embed(x)``; ``x = x + aggregate(x)``; ``x = x + mlp(x)`` (the last two with
    stochastic depth). Both BNs precede a 1x1 conv and fold into it; after
    :meth:`switch_to_deploy` the last two sums are post-ops of their last conv
    (:mod:`mmext.models.onednn`).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, dim, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.aggregate = nn.Sequential(OrderedDict(
            pw1=BNLinear(dim, dim, conv=True),
            dw=nn.Conv2d(dim, dim, 5, padding=2, groups=dim),
            pw2=nn.Conv2d(dim, dim, 1)))
        self.mlp = _mlp(dim, int(dim * mlp_ratio), conv=True)
        self.deploy = False

    def switch_to_deploy(self):
        """Run the two residual sums as post-ops of their last conv (the children fold)."""
        self.deploy = True

    def forward(self, x):
        x = x + self.pos_embed(x)
        if self.deploy and not (self.training and self.drop_path_rate):
            agg = self.aggregate
            x = conv_add(agg.pw2, agg.dw(agg.pw1(x)), x)
            return self.mlp.forward_residual(x, x)
        x = x + drop_path(self.aggregate(x), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(x), self.drop_path_rate, self.training)


class GlobalSparseAttention(DerivedCache):
    """Multi-head attention among delegate tokens, with local propagation back to every token.

    With sample ratio ``r > 1``: delegates are the tokens at rows/columns ``0, r, 2r, ...``
    (``h = ceil(H/r)``, ``w = ceil(W/r)``); they attend to each other; a depthwise ``r x r``
    stride-``r`` transposed conv spreads each over its window (``r*h x r*w``, cropped to
    ``H x W``), then LayerNorm and the projection. With ``r = 1`` it is plain self-attention.

    ``attn_impl`` (:data:`~mmext.models.attention.ATTN_IMPLS`): ``'auto'`` runs SDPA on CUDA and the
    written-out softmax attention elsewhere; ``'sdpa'``/``'explicit'`` force one.

    Shapes: tokens ``(N, H*W, C)`` (row-major over the ``H x W`` map) ``-> (N, H*W, C)``.
    """

    cache_attrs = ('_fold_cache', )

    def __init__(self, dim, num_heads, sample_ratio=1, attn_impl='auto'):
        super().__init__()
        self.attn_impl = attn_impl
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.sample_ratio = sample_ratio
        self.qkv = nn.Linear(dim, dim * 3)
        if sample_ratio > 1:
            self.local_prop = nn.ConvTranspose2d(dim, dim, sample_ratio, stride=sample_ratio,
                                                 groups=dim)
            self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.deploy = False
        self._fold_cache = {}  # 'fold': (SourceStamp, _fold()), see _folded

    def switch_to_deploy(self):
        """Run local propagation, its LayerNorm and the projection as
        :meth:`_propagate_project` (same parameters, same outputs), folded here once."""
        self.deploy = True
        if self.sample_ratio > 1:
            with torch.no_grad():
                self._folded()

    def _fold(self):
        """The weights of :meth:`_propagate_project` (computed in float32 or float64).

        Kernel = stride: token ``(i*r + a, j*r + b)`` before the norm is ``s = d[i, j] * w_ab + u``
        (``w_ab`` the transposed conv's tap ``(a, b)`` of every channel, ``u`` its bias). Its
        LayerNorm statistics are linear in ``d`` and ``d**2``: ``mean = (d.w_ab + sum(u)) / C``,
        ``E[s^2] = (d^2.w_ab^2 + 2 d.(w_ab u) + sum(u^2)) / C``. With ``P``, ``g``, ``beta`` the
        projection and norm weights, ``proj(norm(s)) = rstd * (A_ab d + k1) + k3`` where
        ``A_ab = P diag(g w_ab) - (P g) w_ab^T / C``, ``k1 = P (g u) - (P g) mean(u)`` and
        ``k3 = P beta + proj.bias``. Returns ``A`` ``(r*r*C, C)`` (the ``A_ab`` stacked), ``k1``
        repeated ``(r*r*C,)``, ``S`` ``(2*r*r, 2*C)`` and ``s0`` ``(2*r*r,)`` with
        ``[d, d^2] S^T + s0 = [mean_ab, E[s^2]_ab]`` (float32 at least), ``k3`` ``(C,)``.
        """
        r, c = self.sample_ratio, self.proj.in_features
        dtype = self.proj.weight.dtype
        ft = torch.promote_types(dtype, torch.float32)
        taps = self.local_prop.weight.reshape(c, r * r).t().to(ft)  # (r*r, C): w_ab
        u = self.local_prop.bias.reshape(c).to(ft)  # (C,) (also from fast_ops.WindowSpread)
        g, beta, p = self.norm.weight.to(ft), self.norm.bias.to(ft), self.proj.weight.to(ft)
        pg = p @ g
        a = p[None] * (g * taps)[:, None, :] - pg[None, :, None] * taps[:, None, :] / c
        k1 = p @ (g * u) - pg * u.mean()
        stats = torch.cat([torch.cat([taps, torch.zeros_like(taps)], 1),
                           torch.cat([2 * taps * u, taps.square()], 1)]) / c
        stats_bias = torch.cat([u.sum().expand(r * r), u.square().sum().expand(r * r)]) / c
        return (a.reshape(r * r * c, c).to(dtype), k1.repeat(r * r).to(dtype), stats,
                stats_bias, (p @ beta + self.proj.bias.to(ft)).to(dtype))

    def _folded(self):
        """:meth:`_fold` of the current parameters, kept in a
        :class:`~mmext.models.attention.DerivedCache`: folded by :meth:`switch_to_deploy`, again
        only after a parameter changed (:class:`~mmext.models.attention.SourceStamp`), on every
        call while gradients must reach the parameters or while tracing."""
        sources = (self.local_prop.weight, self.local_prop.bias, self.norm.weight,
                   self.norm.bias, self.proj.weight, self.proj.bias)
        if not caching_ok(sources):
            return self._fold()
        cached = self._fold_cache.get('fold')
        if cached is None or not cached[0].matches(sources):
            cached = self._fold_cache['fold'] = (SourceStamp(sources), self._fold())
        return cached[1]

    def _propagate_project(self, d, hw_shape, residual=None):
        """``proj(norm(local_prop(d)))`` cropped to ``H x W``, as tokens ``(N, H*W, C)`` (plus
        ``residual`` when given), from the attended delegates ``d`` ``(N, gh, gw, C)`` and the
        weights of :meth:`_fold`, without building the propagated map: one matmul gives every
        token's centred, projected value, one more the norm's statistics, one multiply by
        ``rstd``, written in token order, finishes. Stage 1 of EdgeViT-XXS (b16 at 224, bf16,
        one thread): 2.9 ms instead of 7.1 ms for the transposed conv as a broadcast product,
        LayerNorm and projection (+ residual).
        """
        n, gh, gw, c = d.shape
        h, w = hw_shape
        r = self.sample_ratio
        a, k1, stats, stats_bias, k3 = self._folded()
        y = onednn.matmul(d, a.to(d.dtype), k1.to(d.dtype))  # (N, gh, gw, r*r*C)
        df = d.to(stats.dtype)
        mean, ex2 = F.linear(torch.cat([df, df.square()], -1), stats, stats_bias).split(r * r, -1)
        rstd = (ex2 - mean.square()).clamp_min(0).add(self.norm.eps).rsqrt().to(d.dtype)
        y = y.view(n, gh, gw, r, r, c).permute(0, 1, 3, 2, 4, 5)  # token order (N, gh, r, gw, r, C)
        rstd = rstd.view(n, gh, gw, r, r, 1).permute(0, 1, 3, 2, 4, 5)
        k3 = k3.to(d.dtype)
        if (inplace_ok(y) and inplace_ok(k3) and h == gh * r and w == gw * r
                and (residual is None or (inplace_ok(residual) and residual.is_contiguous()
                                          and residual.dtype == d.dtype))):
            out = d.new_empty(n, gh, r, gw, r, c)  # one pass, straight into token order
            if residual is None:
                return torch.addcmul(k3, y, rstd, out=out).view(n, h * w, c)
            torch.addcmul(residual.view(n, gh, r, gw, r, c), y, rstd, out=out)
            return out.add_(k3).view(n, h * w, c)
        out = (y * rstd).reshape(n, gh * r, gw * r, c)[:, :h, :w].reshape(n, h * w, c) + k3
        return out if residual is None else residual + out

    def delegates(self, x, hw_shape):
        """The delegate tokens of ``x`` (``(N, H*W, C)``): ``(N, ceil(H/r) * ceil(W/r), C)`` and
        their grid ``(ceil(H/r), ceil(W/r))``; ``x`` itself when ``r = 1``."""
        r = self.sample_ratio
        if r == 1:
            return x, hw_shape
        n, _, c = x.shape
        h, w = hw_shape
        grid = x.reshape(n, h, w, c)[:, ::r, ::r]
        # ceil(H/r) by arithmetic, not grid.shape: in an exported graph the shape of a strided
        # slice is where OpenVINO's dynamic-shape inference went wrong (it read H: a Reshape
        # failed at run time, and NNCF's calibration with it)
        gh, gw = (h - 1) // r + 1, (w - 1) // r + 1
        return grid.reshape(n, gh * gw, c), (gh, gw)

    def forward(self, x, hw_shape, pre_norm=None, residual=None):
        """Attention of the tokens ``x`` on the ``H x W`` map ``hw_shape``.

        ``pre_norm`` (a per-token module, e.g. the block's LayerNorm) is applied to the tokens
        first -- only to the delegates, the only tokens the attention reads: the same result
        as normalising all of them, at ``1/r^2`` of the cost. With ``residual`` (the shape of
        the output) the result is ``residual + attention``, fused into the output projection
        after :meth:`switch_to_deploy` where it can be (:func:`~mmext.models.onednn.linear_add`).
        """
        n, _, c = x.shape
        h, w = hw_shape
        r = self.sample_ratio
        x, (gh, gw) = self.delegates(x, hw_shape)
        if pre_norm is not None:
            x = pre_norm(x)
        qkv = onednn.matmul(x, self.qkv.weight, self.qkv.bias) if self.deploy else self.qkv(x)
        qkv = qkv.view(n, x.shape[1], 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, C / heads)
        if use_sdpa(self.attn_impl, q):
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = softmax_((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)) @ v
        if r > 1 and self.deploy:
            return self._propagate_project(out.transpose(1, 2).reshape(n, gh, gw, c), (h, w),
                                           residual)
        if r > 1:
            out = out.transpose(2, 3).reshape(n, c, gh, gw)  # channel = head * head_dim + j
            out = self.local_prop(out)[:, :, :h, :w]
            out = self.norm(out.flatten(2).transpose(1, 2))
        else:
            out = out.transpose(1, 2).reshape(n, h * w, c)
        if residual is None:
            return self.proj(out)
        if self.deploy:
            return onednn.linear_add(self.proj, out, residual)
        return residual + self.proj(out)


class SparseAttentionBlock(nn.Module):
    """``x + DW3x3(x)``, then on tokens ``x + Attn(LN(x))`` and ``x + MLP(LN(x))``.

    After :meth:`switch_to_deploy` the two token sums are post-ops of the projections before
    them (:mod:`mmext.models.onednn`).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``; tokens only inside.
    """

    def __init__(self, dim, num_heads, sample_ratio, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalSparseAttention(dim, num_heads, sample_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(dim, int(dim * mlp_ratio), conv=False)
        self.deploy = False

    def switch_to_deploy(self):
        """Run the two token sums as post-ops of the projections before them."""
        self.deploy = True

    def forward(self, x):
        x = x + self.pos_embed(x)
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        if self.deploy and not (self.training and self.drop_path_rate):
            t = self.attn(t, (h, w), pre_norm=self.norm1, residual=t)
            t = self.mlp.forward_residual(self.norm2(t), t)
        else:
            t = t + drop_path(self.attn(t, (h, w), pre_norm=self.norm1), self.drop_path_rate,
                              self.training)
            t = t + drop_path(self.mlp(self.norm2(t)), self.drop_path_rate, self.training)
        return t.transpose(1, 2).reshape(n, c, h, w)


class LGLBlock(nn.Module):
    """Local-global-local block: :class:`LocalAggregation` (only when ``sample_ratio > 1``), then
    :class:`SparseAttentionBlock` (global sparse attention + local propagation + MLP).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, dim, num_heads, sample_ratio, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.local_agg = (LocalAggregation(dim, mlp_ratio, drop_path_rate)
                          if sample_ratio > 1 else nn.Identity())
        self.global_attn = SparseAttentionBlock(dim, num_heads, sample_ratio, mlp_ratio,
                                                drop_path_rate)

    def forward(self, x):
        return self.global_attn(self.local_agg(x))


class EdgeViTStage(BaseStage):
    """A stage: patch embedding (stride 2; identity in stage 1, after the stem) then LGL blocks.

    Shapes: ``(N, C_in, H, W) -> (N, C, ceil(H/2), ceil(W/2))`` (``(N, C, H, W)`` in stage 1).
    """

    def __init__(self, in_dim, dim, depth, num_heads, sample_ratio, mlp_ratio, drop_path_rates,
                 downsample):
        super().__init__()
        self.downsample = PatchEmbed(in_dim, dim, 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            LGLBlock(dim, num_heads, sample_ratio, mlp_ratio, dpr) for dpr in drop_path_rates])

    def forward(self, x):
        return self.run_blocks(self.blocks, self.downsample(x))


@MODELS.register_module()
class EdgeViT(BaseBackbone):
    """EdgeViT backbone for detection and segmentation.

    Args:
        arch (str | dict): ``'xxs'``, ``'xs'``, ``'s'`` or a dict with ``embed_dims``, ``depths``,
            ``num_heads`` (and optionally ``sample_ratios``, default ``[4, 2, 2, 1]``, and
            ``mlp_ratio``, default 4).
        out_indices (Sequence[int]): stages to return, of 0 (stride 4), 1 (8), 2 (16), 3 (32).
        frozen_stages, norm_eval, with_cp, deploy, init_cfg: see :class:`BaseBackbone`. The stem
            (the stride-4 patch embedding) is frozen with stage 0.
        drop_path_rate (float): stochastic depth, rising linearly over the blocks to this value.
        attn_impl (str): ``'auto'``, ``'sdpa'`` or ``'explicit'`` for every global attention.

    Shapes: ``(N, 3, H, W) ->`` tuple of ``(N, embed_dims[i], ceil(H/s_i), ceil(W/s_i))`` with
    ``s_i = 4 * 2**i`` for ``i`` in ``out_indices`` (any H and W).
    """

    arch_settings = {
        'xxs': dict(embed_dims=[36, 72, 144, 288], depths=[1, 1, 3, 2], num_heads=[1, 2, 4, 8]),
        'xs': dict(embed_dims=[48, 96, 240, 384], depths=[1, 1, 3, 1], num_heads=[1, 2, 5, 8]),
        's': dict(embed_dims=[48, 96, 240, 384], depths=[1, 2, 5, 3], num_heads=[1, 2, 5, 8]),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    arch_defaults = dict(sample_ratios=[4, 2, 2, 1], mlp_ratio=4.0)
    stage_keys = ('embed_dims', 'depths', 'num_heads', 'sample_ratios')
    min_input_size = 1  # patch embeddings pad to their kernel: down to 1x1
    # static int8 of the position encodings (x + DW3x3(x), 19 small depthwise convs in EdgeViT-S)
    # costs the most accuracy: stage-3/4 cosine 0.988 with them in int8, 0.994 in float
    # (EdgeViT-S b16@224 on generated demo images, random weights)
    int8_float_layers = ('pos_embed',)

    def __init__(self, arch='xxs', out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, drop_path_rate=0.0, attn_impl='auto',
                 deploy=False):
        super().__init__(arch, 4, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         attn_impl)
        dims, depths = self.arch['embed_dims'], self.arch['depths']
        sample_ratios, mlp_ratio = self.arch['sample_ratios'], self.arch['mlp_ratio']
        dpr = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.stem = PatchEmbed(3, dims[0], 4)
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            start = sum(depths[:i])
            self.stages.append(EdgeViTStage(
                dims[max(i - 1, 0)], dim, depth, self.arch['num_heads'][i], sample_ratios[i],
                mlp_ratio, dpr[start:start + depth], downsample=i > 0))
        self.out_channels = [dims[i] for i in self.out_indices]
        self.apply(_init_linear)
        self.finish_init(deploy)

    @classmethod
    def check_arch(cls, arch):
        arch = super().check_arch(arch)
        for i, (dim, heads, ratio) in enumerate(zip(arch['embed_dims'], arch['num_heads'],
                                                    arch['sample_ratios'])):
            if not isinstance(heads, int) or heads < 1 or dim % heads:
                raise ConfigError(f'EdgeViT arch: num_heads[{i}]={heads!r} must be a positive '
                                  f'int dividing embed_dims[{i}]={dim}.')
            if not isinstance(ratio, int) or ratio < 1:
                raise ConfigError(f'EdgeViT arch: sample_ratios[{i}]={ratio!r} must be a '
                                  f'positive int.')
        return arch


def _init_linear(m):
    """The authors' initialisation: linear weights ~ truncated N(0, 0.02), biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
