"""EfficientFormer: Vision Transformers at MobileNet Speed (Li et al., NeurIPS 2022), V1 (L1/L3/L7).

A conv stem (two 3x3 stride-2 Conv-BN-ReLU, stride 4), then 4 stages at strides 4/8/16/32, each
after a 3x3 stride-2 Conv-BN downsampling (except the first). Every block is a *MetaBlock*
``x + LS(TokenMixer(x))``, ``x + LS(MLP(x))`` with layer scale ``LS``:

* **Meta4D** (all of stages 1-3, the first blocks of stage 4) stays in ``(N, C, H, W)``: the token
  mixer is pooling (``AvgPool3x3(x) - x``), the MLP is ``1x1 Conv-BN -> GELU -> 1x1 Conv-BN``.
* **Meta3D** (the last ``num_vit`` blocks of stage 4) works on ``(N, HW, C)`` tokens:
  ``LayerNorm -> MHSA`` (8 heads, key dim 32, value dim 4 x 32, learned attention biases) and
  ``LayerNorm -> Linear -> GELU -> Linear``. The stage flattens to tokens once before its first
  Meta3D block and goes back to NCHW once, for the output.

Any input size works without padding: every strided conv has a 3x3 kernel and padding 1, the
pooling uses ``count_include_pad=False`` and attention runs over whatever token grid arrives, so an
``H x W`` input gives outputs of ``ceil(H / s) x ceil(W / s)`` for strides ``s = 4, 8, 16, 32``.

Attention biases at other resolutions: the pretrained table holds one bias per head for each
offset ``(|dy|, |dx|)`` on the 7x7 token grid of a 224 input, 49 entries stored as
``bias[h, |dy| * 7 + |dx|]``. For an ``H x W`` token grid the table, viewed as a
``(heads, 7, 7)`` map over ``(|dy|, |dx|)``, is resized bicubically (``align_corners=False``,
no antialiasing, as timm resizes LeViT-style tables) to ``(heads, H, W)``, and each query/key
pair gathers the entry at its own offset. At 7x7 the table is used as it is, so the model equals
the authors' at 224. The parameter stays the 7x7 table; the per-grid bias is computed at forward
time and, in inference, cached per grid size (see
:class:`~mmext.models.attention.AttentionBiasTable`).

Folding: :meth:`switch_to_deploy` folds every BatchNorm (stem, downsampling, Meta4D MLPs) into its
conv and every layer scale into the conv/linear before it; the pooling mixer with its residual and
layer scale becomes one depthwise window-sum conv (:class:`PoolingResidual`), and the Meta3D
LayerNorms' affine parts fold into the linears after them. LayerNorm/GroupNorm statistics come from
each input, so those normalisations themselves stay. After folding, each MLP's ``fc1`` + GELU and
``fc2`` + the block's residual sum run as single oneDNN ops on the CPU in inference
(:class:`~mmext.models.layers.FusedGELUMlp`; GELU as a separate op was a third of L1's bf16 time).
"""
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.errors import ConfigError
from mmext.models.base import BaseBackbone, BaseStage
from mmext.models.attention import AttentionBiasTable, attention_with_bias
from mmext.models.layers import (ConvBN, FusedGELUMlp, LayerScale, drop_path,
                                 fold_layer_norm_affine, fold_output_scale)
from mmext.registry import MODELS


class Attention(AttentionBiasTable):
    """Multi-head self-attention over tokens with learned offset biases.

    ``qkv = Linear(x)`` is laid out per head as ``[q (key_dim), k (key_dim), v (attn_ratio *
    key_dim)]``; ``softmax(q k^T / sqrt(key_dim) + bias) v`` goes through ``proj``.

    ``attn_impl``: see :func:`~mmext.models.attention.attention_with_bias`.

    Shapes: ``(N, H*W, C), (H, W) -> (N, H*W, C)``.
    """

    def __init__(self, dim, key_dim=32, num_heads=8, attn_ratio=4, resolution=7,
                 attn_impl='auto'):
        super().__init__(num_heads, resolution)
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = int(attn_ratio * key_dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)

    def forward(self, x, hw):
        n, length, _ = x.shape
        per_head = 2 * self.key_dim + self.value_dim
        qkv = self.qkv(x).reshape(n, length, self.num_heads, per_head).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        bias = self.attention_bias(hw, dtype=q.dtype)
        x = attention_with_bias(q, k, v, bias, self.key_dim ** -0.5, self.attn_impl)
        return self.proj(x.transpose(1, 2).reshape(n, length, self.num_heads * self.value_dim))


# ------------------------------------------------------------------------ blocks
class Pooling(nn.Module):
    """PoolFormer token mixer ``AvgPool3x3(x) - x`` (padding not counted in the average).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, pool_size=3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class PoolingResidual(nn.Module):
    """Deploy form of ``x + gamma * (AvgPool_kxk(x) - x)``: ``(1 - gamma) x + gamma S(x) / count``.

    ``S`` is the window sum, a depthwise conv with ``gamma``-filled kernels (one pass over the map;
    CPU average pooling on NCHW maps is several times slower), and ``count`` the number of pixels of
    each window inside the map (what ``count_include_pad=False`` divides by), computed from the
    map's size so any input size (and ONNX's dynamic axes) works.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, gamma, pool_size=3):
        super().__init__()
        self.pool_size = pool_size
        self.register_buffer('weight', gamma.detach().clone().view(-1, 1, 1, 1).repeat(
            1, 1, pool_size, pool_size))
        self.register_buffer('keep', (1 - gamma.detach()).view(1, -1, 1, 1).clone())

    def forward(self, x):
        pad = self.pool_size // 2
        window_sum = F.conv2d(x, self.weight.to(x.dtype), None, 1, pad, 1, x.shape[1])
        ones = x.new_ones(1, 1, self.pool_size, self.pool_size)
        count = F.conv2d(x.new_ones(1, 1, *x.shape[-2:]), ones, None, 1, pad)
        return torch.addcmul(x * self.keep.to(x.dtype), window_sum, count.reciprocal())


class ConvMlp(FusedGELUMlp):
    """``1x1 Conv-BN -> GELU -> 1x1 Conv-BN``; both BNs fold into their convs, and after
    ``switch_to_deploy`` conv + GELU (and, in :meth:`forward_residual`, conv + the residual)
    run as single oneDNN ops on the CPU (:class:`~mmext.models.layers.FusedGELUMlp`).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)`` through ``hidden_channels``.
    """

    def __init__(self, channels, hidden_channels):
        super().__init__(OrderedDict(fc1=ConvBN(channels, hidden_channels, bias=True),
                                     act=nn.GELU(),
                                     fc2=ConvBN(hidden_channels, channels, bias=True)))


class LinearMlp(FusedGELUMlp):
    """``Linear -> GELU -> Linear`` on tokens (fused like :class:`ConvMlp` after deploy).

    Shapes: ``(N, L, C) -> (N, L, C)``.
    """

    def __init__(self, channels, hidden_channels):
        super().__init__(OrderedDict(fc1=nn.Linear(channels, hidden_channels), act=nn.GELU(),
                                     fc2=nn.Linear(hidden_channels, channels)))


class Meta4D(nn.Module):
    """``x + LS1(Pooling(x))``, then ``x + LS2(ConvMlp(x))``.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, dim, mlp_ratio=4.0, pool_size=3, layer_scale_init_value=1e-5,
                 drop_path_rate=0.0):
        super().__init__()
        self.token_mixer = Pooling(pool_size)
        self.ls1 = LayerScale(dim, layer_scale_init_value, channel_dim=1)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init_value, channel_dim=1)
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        if isinstance(self.token_mixer, PoolingResidual):  # deploy: residual and scale inside
            x = self.token_mixer(x)
        else:
            x = x + drop_path(self.ls1(self.token_mixer(x)), self.drop_path_rate, self.training)
        if isinstance(self.ls2, nn.Identity) and not (self.training and self.drop_path_rate):
            return self.mlp.forward_residual(x, x)  # deploy: the scale is in fc2
        return x + drop_path(self.ls2(self.mlp(x)), self.drop_path_rate, self.training)

    @torch.no_grad()
    def switch_to_deploy(self):
        if isinstance(self.token_mixer, Pooling):
            self.token_mixer = PoolingResidual(self.ls1.gamma,
                                               self.token_mixer.pool.kernel_size)
            self.ls1 = nn.Identity()
        if isinstance(self.ls2, LayerScale):
            self.mlp.fc2.switch_to_deploy()
            fold_output_scale(self.mlp.fc2.conv, self.ls2.gamma)
            self.ls2 = nn.Identity()


class Meta3D(nn.Module):
    """``x + LS1(Attention(LN(x)))``, then ``x + LS2(LinearMlp(LN(x)))`` on tokens.

    Shapes: ``(N, H*W, C), (H, W) -> (N, H*W, C)``; ``hw`` is the token grid.
    """

    def __init__(self, dim, mlp_ratio=4.0, num_heads=8, key_dim=32, attn_ratio=4, resolution=7,
                 layer_scale_init_value=1e-5, drop_path_rate=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, key_dim, num_heads, attn_ratio, resolution)
        self.ls1 = LayerScale(dim, layer_scale_init_value)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LinearMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init_value)
        self.drop_path_rate = drop_path_rate

    def forward(self, x, hw):
        x = x + drop_path(self.ls1(self.token_mixer(self.norm1(x), hw)), self.drop_path_rate,
                          self.training)
        if isinstance(self.ls2, nn.Identity) and not (self.training and self.drop_path_rate):
            return self.mlp.forward_residual(self.norm2(x), x)  # deploy: the scale is in fc2
        return x + drop_path(self.ls2(self.mlp(self.norm2(x))), self.drop_path_rate,
                             self.training)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Fold the layer scales into ``proj``/``fc2`` and the norms' affine parts into
        ``qkv``/``fc1``."""
        if isinstance(self.ls1, LayerScale):
            fold_output_scale(self.token_mixer.proj, self.ls1.gamma)
            fold_output_scale(self.mlp.fc2, self.ls2.gamma)
            self.ls1 = self.ls2 = nn.Identity()
        self.norm1 = fold_layer_norm_affine(self.norm1, [self.token_mixer.qkv])
        self.norm2 = fold_layer_norm_affine(self.norm2, [self.mlp.fc1])


class EfficientFormerStage(BaseStage):
    """Optional 3x3 stride-2 Conv-BN downsampling, ``depth - num_vit`` Meta4D blocks, then
    ``num_vit`` Meta3D blocks (``blocks`` holds them in that order).

    Shapes: ``(N, C_in, H, W) -> (N, C, ceil(H/2), ceil(W/2))`` when it downsamples.
    """

    def __init__(self, in_dim, dim, depth, num_vit, downsample, drop_path_rates, **block_cfg):
        super().__init__()
        self.downsample = (ConvBN(in_dim, dim, 3, 2, 1, bias=True) if downsample
                           else nn.Identity())
        self.num_conv_blocks = depth - num_vit
        conv_cfg = {k: block_cfg[k] for k in ('mlp_ratio', 'pool_size', 'layer_scale_init_value')}
        attn_cfg = {k: v for k, v in block_cfg.items() if k != 'pool_size'}
        self.blocks = nn.ModuleList([
            Meta4D(dim, drop_path_rate=dpr, **conv_cfg) if j < self.num_conv_blocks else
            Meta3D(dim, drop_path_rate=dpr, **attn_cfg) for j, dpr in enumerate(drop_path_rates)])

    def forward(self, x):
        """Meta4D blocks on the map, then Meta3D blocks on tokens made once."""
        x = self.run_blocks(self.blocks[:self.num_conv_blocks], self.downsample(x))
        if self.num_conv_blocks < len(self.blocks):
            n, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            attn_blocks = [partial(block, hw=(h, w))
                           for block in self.blocks[self.num_conv_blocks:]]
            x = self.run_blocks(attn_blocks, tokens).transpose(1, 2).reshape(n, c, h, w)
        return x


@MODELS.register_module()
class EfficientFormer(BaseBackbone):
    """EfficientFormer (V1) backbone for detection and segmentation.

    Args:
        arch (str | dict): ``'l1'``, ``'l3'``, ``'l7'`` or a dict with ``embed_dims``, ``depths``
            and ``num_vit`` (Meta3D blocks at the end of the last stage), and optionally
            ``mlp_ratio`` (4), ``pool_size`` (3), ``num_heads`` (8), ``key_dim`` (32),
            ``attn_ratio`` (4), ``resolution`` (7, the grid of the bias table) and
            ``layer_scale_init_value`` (1e-5).
        out_indices (Sequence[int]): stages to return, of 0..3 (strides 4, 8, 16, 32).
        frozen_stages, norm_eval, with_cp, deploy, init_cfg: see :class:`BaseBackbone`. A frozen
            stage's output norm is frozen with it.
        out_norm (bool): put a GroupNorm with one group on each returned map, as the authors'
            dense-prediction backbone does. Default False.
        drop_path_rate (float): stochastic depth, rising linearly over all blocks to this value.
        attn_impl (str): ``'auto'``, ``'sdpa'`` or ``'explicit'`` for every Meta3D attention.

    Shapes: ``(N, 3, H, W) ->`` tuple of ``(N, embed_dims[i], ceil(H/s_i), ceil(W/s_i))`` with
    ``s_i = 4 * 2**i`` for ``i`` in ``out_indices`` (any H and W).
    """

    arch_settings = {
        'l1': dict(embed_dims=[48, 96, 224, 448], depths=[3, 2, 6, 4], num_vit=1),
        'l3': dict(embed_dims=[64, 128, 320, 512], depths=[4, 4, 12, 6], num_vit=4),
        'l7': dict(embed_dims=[96, 192, 384, 768], depths=[6, 6, 18, 8], num_vit=8),
    }
    arch_keys = ('embed_dims', 'depths', 'num_vit')
    arch_defaults = dict(mlp_ratio=4.0, pool_size=3, num_heads=8, key_dim=32, attn_ratio=4,
                         resolution=7, layer_scale_init_value=1e-5)
    stage_keys = ('embed_dims', 'depths')
    min_input_size = 1  # padded 3x3 convs, pooling without padding counts: down to 1x1

    def __init__(self, arch='l1', out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, out_norm=False, drop_path_rate=0.0,
                 attn_impl='auto', deploy=False):
        super().__init__(arch, 4, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         attn_impl)
        dims, depths = self.arch['embed_dims'], self.arch['depths']
        block_cfg = {k: self.arch[k] for k in self.arch_defaults}
        self.stem = nn.Sequential(
            ConvBN(3, dims[0] // 2, 3, 2, 1, bias=True), nn.ReLU(),
            ConvBN(dims[0] // 2, dims[0], 3, 2, 1, bias=True), nn.ReLU())
        total = sum(depths)
        rates = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(EfficientFormerStage(
                dims[max(i - 1, 0)], dims[i], depth,
                num_vit=self.arch['num_vit'] if i == 3 else 0, downsample=i > 0,
                drop_path_rates=rates[start:start + depth], **block_cfg))
        self.out_norms = nn.ModuleList([
            nn.GroupNorm(1, dims[i]) if out_norm and i in self.out_indices else nn.Identity()
            for i in range(4)])
        self.out_channels = [dims[i] for i in self.out_indices]
        self._init_layers()
        self.finish_init(deploy)

    @classmethod
    def check_arch(cls, arch):
        arch = super().check_arch(arch)
        num_vit, last = arch['num_vit'], arch['depths'][3]
        if not isinstance(num_vit, int) or isinstance(num_vit, bool) or not 0 <= num_vit <= last:
            raise ConfigError(f'EfficientFormer arch: num_vit={num_vit!r} (Meta3D blocks at the '
                              f'end of the last stage) must be an int in 0..depths[3]={last}.')
        pool = arch['pool_size']
        if not isinstance(pool, int) or pool < 1 or pool % 2 == 0:
            raise ConfigError(f'EfficientFormer arch: pool_size={pool!r} must be an odd int.')
        for key in ('num_heads', 'key_dim', 'resolution'):
            if not isinstance(arch[key], int) or arch[key] < 1:
                raise ConfigError(f'EfficientFormer arch: {key}={arch[key]!r} must be a '
                                  f'positive int.')
        return arch

    def _init_layers(self):
        """The authors' initialisation: truncated normal (std 0.02) for linear and MLP convs."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, ConvMlp)):
                for layer in ([m] if isinstance(m, nn.Linear) else [m.fc1.conv, m.fc2.conv]):
                    nn.init.trunc_normal_(layer.weight, std=0.02)
                    nn.init.zeros_(layer.bias)

    def _freeze_stages(self):
        super()._freeze_stages()
        for norm in self.out_norms[:self.frozen_stages + 1]:
            norm.eval()
            for param in norm.parameters():
                param.requires_grad = False

    def forward_output(self, index, x):
        return self.out_norms[index](x)
