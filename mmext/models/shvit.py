"""SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design (Yun & Ro, CVPR 2024).

A 16x16 overlapping stem (four 3x3 stride-2 Conv-BNs), then 3 stages at strides 16/32/64. Each
block is ``DWConv -> SHSA -> FFN`` (all residual); stage 1 has no attention. Single-head
self-attention (SHSA) runs on the first ``partial_dim`` channels only, the rest pass through.
BatchNorm everywhere except the attention's pre-norm (GroupNorm with one group), ReLU.
Every BN folds into a conv in :meth:`~mmext.models.base.BaseBackbone.switch_to_deploy`; after that,
on the CPU in inference, each FFN's ``pw1`` + ReLU and ``pw2`` + the residual sum, and each patch
merging's convs + ReLU, run as single oneDNN ops (:mod:`mmext.models.onednn`).

Works on any input size: the convs pad, and attention runs over whatever token grid arrives.

**Stride-8 level** (``stride8``, for real-time detectors such as RTMDet/YOLOX that want strides
8/16/32): the output tuple then begins with an extra ``(N, embed_dims[0] // 2, ceil(H/8),
ceil(W/8))`` map, either the stem's own stride-8 map (``'stem'``: after its third Conv-BN + ReLU)
or a learned stride-2 transposed Conv-BN + ReLU of the stage-0 map (``'upsample'``, cropped at
the bottom/right to ``ceil(H/8)``; it folds like every Conv-BN).
Module names follow timm's layout (``stem``/``stages.i.downsample``/``stages.i.blocks.j``) so the
authors' and timm's checkpoints map onto it by renaming alone (:mod:`mmext.checkpoints.shvit`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.errors import ConfigError
from mmext.models.base import BaseBackbone, BaseStage
from mmext.models.attention import softmax_, use_sdpa
from mmext.models.layers import ConvBN, Residual, ResidualConvBN
from mmext.models.onednn import conv_relu
from mmext.registry import MODELS

STRIDE8_MODES = (None, 'stem', 'upsample')


def make_divisible(value, divisor=8):
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``; reduction to ``make_divisible(C * rd_ratio)``.
    """

    def __init__(self, channels, rd_ratio=0.25):
        super().__init__()
        hidden = make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class FFN(nn.Module):
    """Pointwise feed-forward, ``ConvBN(1x1) -> ReLU -> ConvBN(1x1)``.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)`` through ``hidden_channels``.
    """

    def __init__(self, channels, hidden_channels):
        super().__init__()
        self.pw1 = ConvBN(channels, hidden_channels)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden_channels, channels, bn_weight_init=0.0)
        self.deploy = False

    def switch_to_deploy(self):
        """After the children fold their BNs: ``pw1`` + ReLU and ``pw2`` + the residual (in
        :meth:`forward_residual`) run as single oneDNN ops (:mod:`mmext.models.onednn`)."""
        self.deploy = (isinstance(self.pw1.bn, nn.Identity) and isinstance(self.pw2.bn, nn.Identity)
                       and type(self.act) is nn.ReLU)

    def forward(self, x):
        if self.deploy:
            return self.pw2(conv_relu(self.pw1.conv, x))
        return self.pw2(self.act(self.pw1(x)))

    def forward_residual(self, x, residual):
        """``residual + self(x)``, the sum as ``pw2``'s post-op in deploy."""
        if self.deploy:
            return self.pw2.forward_residual(conv_relu(self.pw1.conv, x), residual)
        return residual + self(x)


class PatchMerging(nn.Module):
    """Downsampling by 2: ``1x1 (x4) -> ReLU -> DW 3x3 s2 -> ReLU -> SE -> 1x1``.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        hidden = in_channels * 4
        self.conv1 = ConvBN(in_channels, hidden)
        self.act1 = nn.ReLU()
        self.conv2 = ConvBN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.act2 = nn.ReLU()
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = ConvBN(hidden, out_channels)

    def forward(self, x):
        if isinstance(self.conv1.bn, nn.Identity) and isinstance(self.conv2.bn, nn.Identity) \
                and type(self.act1) is type(self.act2) is nn.ReLU:  # deploy: fused conv + ReLU
            x = conv_relu(self.conv2.conv, conv_relu(self.conv1.conv, x))
        else:
            x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.conv3(self.se(x))


class SHSA(nn.Module):
    """Single-Head Self-Attention on the first ``partial_dim`` channels.

    ``x1, x2 = split(x, [partial_dim, C - partial_dim])``; ``x1`` goes through GroupNorm(1), a
    1x1 Conv-BN to ``q, k`` (``qk_dim`` each) and ``v`` (``partial_dim``), and single-head
    attention over all ``H*W`` positions; then ``ReLU -> 1x1 Conv-BN`` over ``cat(x1, x2)``.

    ``attn_impl`` (:data:`~mmext.models.attention.ATTN_IMPLS`): ``'auto'`` runs SDPA on CUDA and the
    explicit channel-first formula elsewhere; ``'sdpa'``/``'explicit'`` force one.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``; attention is ``(N, HW, HW)``.
    """

    def __init__(self, dim, qk_dim, partial_dim, attn_impl='auto'):
        super().__init__()
        self.attn_impl = attn_impl
        self.dim = dim
        self.qk_dim = qk_dim
        self.partial_dim = partial_dim
        self.pre_norm = nn.GroupNorm(1, partial_dim)
        self.qkv = ConvBN(partial_dim, qk_dim * 2 + partial_dim)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(dim, dim, bn_weight_init=0.0))

    def forward(self, x):
        n, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.partial_dim, self.dim - self.partial_dim], dim=1)
        qkv = self.qkv(self.pre_norm(x1)).flatten(2)  # (N, 2*qk + pd, HW)
        if use_sdpa(self.attn_impl, x):  # one fused kernel
            q, k, v = qkv.transpose(1, 2).unsqueeze(1).split(
                [self.qk_dim, self.qk_dim, self.partial_dim], dim=-1)
            x1 = F.scaled_dot_product_attention(q, k, v)  # (N, 1, HW, pd), scale qk_dim ** -0.5
            x1 = x1.squeeze(1).transpose(1, 2).reshape(n, self.partial_dim, h, w)
        else:  # channel-first throughout: no transposed copies, no SDPA math-path checks
            q, k, v = qkv.split([self.qk_dim, self.qk_dim, self.partial_dim], dim=1)
            attn = softmax_((q * self.qk_dim ** -0.5).transpose(1, 2) @ k)  # (N, HW, HW)
            x1 = (v @ attn.transpose(1, 2)).view(n, self.partial_dim, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))


class SHViTBlock(nn.Module):
    """``x -> x + DWConv(x) -> x + SHSA(x) -> x + FFN(x)``; no SHSA when ``partial_dim`` is 0.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, dim, qk_dim, partial_dim, use_attn, drop_path_rate=0.0):
        super().__init__()
        self.conv = ResidualConvBN(dim, 3, bn_weight_init=0.0)
        self.mixer = (Residual(SHSA(dim, qk_dim, partial_dim), drop_path_rate) if use_attn
                      else nn.Identity())
        self.ffn = Residual(FFN(dim, dim * 2), drop_path_rate)

    def forward(self, x):
        return self.ffn(self.mixer(self.conv(x)))


class SHViTStage(BaseStage):
    """A stage: optional downsampling (``DWConv, FFN, PatchMerging, DWConv, FFN``) then blocks.

    Shapes: ``(N, C_in, H, W) -> (N, C, ceil(H/2), ceil(W/2))`` when it downsamples, else
    ``(N, C, H, W)``.
    """

    def __init__(self, in_dim, dim, qk_dim, partial_dim, use_attn, downsample, drop_path_rates):
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(
                ResidualConvBN(in_dim, 3),
                Residual(FFN(in_dim, in_dim * 2)),
                PatchMerging(in_dim, dim),
                ResidualConvBN(dim, 3),
                Residual(FFN(dim, dim * 2)),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[SHViTBlock(dim, qk_dim, partial_dim, use_attn, dpr)
                                      for dpr in drop_path_rates])

    def forward(self, x):
        return self.run_blocks(self.blocks, self.downsample(x))


@MODELS.register_module()
class SHViT(BaseBackbone):
    """SHViT backbone for detection and segmentation.

    Args:
        arch (str | dict): ``'s1'``..``'s4'`` or a dict with ``embed_dims``, ``depths``,
            ``partial_dims`` (3 entries each) and optionally ``qk_dim`` (16) and
            ``attn_stages`` (``[False, True, True]``).
        out_indices (Sequence[int]): stages to return, of 0 (stride 16), 1 (32), 2 (64).
        frozen_stages, norm_eval, with_cp, deploy, init_cfg: see :class:`BaseBackbone`.
        drop_path_rate (float): stochastic depth on the blocks' attention and FFN branches,
            rising linearly over all blocks to this value.
        stride8 (None | str): ``'stem'`` or ``'upsample'`` adds a stride-8 map with
            ``embed_dims[0] // 2`` channels (:attr:`stride8_channels`) at the front of the
            outputs (see the module docstring). The ``'upsample'`` branch is new (not in ImageNet
            weights) and is never frozen.
        attn_impl (str): ``'auto'``, ``'sdpa'`` or ``'explicit'`` for every SHSA.

    Shapes: ``(N, 3, H, W) ->`` tuple of ``(N, embed_dims[i], ceil(H/s_i), ceil(W/s_i))`` with
    ``s_i = 16 * 2**i`` for ``i`` in ``out_indices`` (any H and W), preceded by
    ``(N, embed_dims[0] // 2, ceil(H/8), ceil(W/8))`` when ``stride8`` is set.
    """

    arch_settings = {
        's1': dict(embed_dims=[128, 224, 320], depths=[2, 4, 5], partial_dims=[32, 48, 68]),
        's2': dict(embed_dims=[128, 308, 448], depths=[2, 4, 5], partial_dims=[32, 66, 96]),
        's3': dict(embed_dims=[192, 352, 448], depths=[3, 5, 5], partial_dims=[48, 75, 96]),
        's4': dict(embed_dims=[224, 336, 448], depths=[4, 7, 6], partial_dims=[48, 72, 96]),
    }
    arch_keys = ('embed_dims', 'depths', 'partial_dims')
    arch_defaults = dict(qk_dim=16, attn_stages=[False, True, True])
    stage_keys = ('embed_dims', 'depths', 'partial_dims', 'attn_stages')
    min_input_size = 1  # 3x3 stride-2 convs with padding: any size down to 1x1
    default_num_stages = 3

    def __init__(self, arch='s4', out_indices=(0, 1, 2), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, drop_path_rate=0.0, stride8=None,
                 attn_impl='auto', deploy=False):
        super().__init__(arch, 3, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         attn_impl)
        if stride8 not in STRIDE8_MODES:
            raise ConfigError(f"SHViT: stride8={stride8!r} is not one of {list(STRIDE8_MODES)}.")
        dims, depths = self.arch['embed_dims'], self.arch['depths']
        qk_dim = self.arch['qk_dim']
        self.stem = nn.Sequential(
            ConvBN(3, dims[0] // 8, 3, 2, 1), nn.ReLU(),
            ConvBN(dims[0] // 8, dims[0] // 4, 3, 2, 1), nn.ReLU(),
            ConvBN(dims[0] // 4, dims[0] // 2, 3, 2, 1), nn.ReLU(),
            ConvBN(dims[0] // 2, dims[0], 3, 2, 1))
        rates = [drop_path_rate * j / max(sum(depths) - 1, 1) for j in range(sum(depths))]
        self.stages = nn.ModuleList()
        for i, (dim, pdim) in enumerate(zip(dims, self.arch['partial_dims'])):
            start = sum(depths[:i])
            self.stages.append(SHViTStage(
                dims[max(i - 1, 0)], dim, qk_dim, pdim, self.arch['attn_stages'][i],
                downsample=i > 0, drop_path_rates=rates[start:start + depths[i]]))
        self.stride8 = stride8
        self.stride8_channels = dims[0] // 2 if stride8 else None
        if stride8 == 'upsample':  # stride 16 -> 8, cropped to the stem's stride-8 grid
            self.stride8_upsample = nn.Sequential(
                ConvBN(dims[0], dims[0] // 2, 2, 2, transposed=True), nn.ReLU())
        self.out_channels = ([self.stride8_channels] if stride8 else []) + [
            dims[i] for i in self.out_indices]
        self.finish_init(deploy)

    @classmethod
    def check_arch(cls, arch):
        arch = super().check_arch(arch)
        dims, pdims = arch['embed_dims'], arch['partial_dims']
        if dims[0] % 8:
            raise ConfigError(f'SHViT arch: embed_dims[0]={dims[0]} must be a multiple of 8 (the '
                              f'stem has embed_dims[0] / 8, / 4, / 2 channels).')
        for i, (dim, pdim, attn) in enumerate(zip(dims, pdims, arch['attn_stages'])):
            if not isinstance(pdim, int) or not (0 < pdim <= dim if attn else 0 <= pdim <= dim):
                raise ConfigError(f'SHViT arch: partial_dims[{i}]={pdim!r} must be an int in '
                                  f'1..embed_dims[{i}]={dim} (stage {i} has attention).')
        if not isinstance(arch['qk_dim'], int) or arch['qk_dim'] < 1:
            raise ConfigError(f"SHViT arch: qk_dim={arch['qk_dim']!r} must be a positive int.")
        return arch

    def forward(self, x):
        """Stage maps of ``out_indices``, preceded by the stride-8 map when ``stride8`` is set."""
        if self.stride8 is None:
            return super().forward(x)
        self.check_input(x)
        s8 = self.stem[:6](x)  # after the third Conv-BN + ReLU: stride 8, embed_dims[0] // 2
        x = self.stem[6](s8)
        if self.stride8 == 'stem':
            return self.forward_stages(x, outs=(s8, ))
        x = self.stages[0](x)
        up = self.stride8_upsample(x)[..., :s8.shape[-2], :s8.shape[-1]]
        outs = (up, x) if 0 in self.out_indices else (up, )
        return self.forward_stages(x, start=1, outs=outs)
