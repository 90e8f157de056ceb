"""EfficientFormerV2 (Li et al., ICCV 2023: Rethinking Vision Transformers for MobileNet Size
and Speed).

A conv stem (two 3x3 stride-2 Conv-BN-GELU, stride 4), then 4 stages at strides 4/8/16/32. Every
block keeps ``(N, C, H, W)`` maps and is ``x + LS(FFN(x))``, preceded in the last ``num_vit``
blocks of stages 3 and 4 by ``x + LS(MHSA(x))``:

* **FFN** (:class:`ConvFFN`): ``1x1 Conv-BN -> GELU -> 3x3 depthwise Conv-BN -> GELU ->
  1x1 Conv-BN`` with a per-block expansion ratio (the authors' tables, see ``arch_settings``).
* **MHSA** (:class:`Attention4D`): 8 heads, key dim 32, value dim 4 x 32, learned offset biases,
  *talking heads* (a 1x1 conv across heads before and after the softmax) and a *local value*
  (3x3 depthwise Conv-BN on ``v`` added to the attention output). In stage 3 it is *stride
  attention*: a 3x3 stride-2 depthwise Conv-BN shrinks the map first and a bilinear x2 upsampling
  brings the result back.
* **Downsampling** between stages is a 3x3 stride-2 Conv-BN; into stage 4 it also adds
  *attention downsampling* (:class:`Attention4DDownsample`): queries from a local 3x3 stride-2
  depthwise conv plus a stride-2 subsampling (``LocalGlobalQuery``), keys and values from
  the full-resolution map.

Any input size: every strided conv is 3x3 with padding 1 and the query subsampling keeps every
other token, so an ``H x W`` input gives outputs of ``ceil(H / s) x ceil(W / s)`` for strides
``s = 4, 8, 16, 32`` without padding. The one place an odd grid matters is stride attention: its
x2 upsampling of a ``ceil(h / 2)`` grid gives ``h + 1`` rows when ``h`` is odd, and the extra
row/column (bottom/right) is cropped: the same as zero-padding the map to even size (which does
not change the stride-2 conv's output) and cropping the result back.

Attention biases at other resolutions: the pretrained tables hold one bias per head for each
offset ``(|dy|, |dx|)`` on the token grids of a 224 input: 7x7 for both self-attentions (stage 3
attends on the 7x7 grid its stride-2 conv makes of its 14x14 map, stage 4 on its 7x7 map) and
14x14 for attention downsampling (7x7 queries at every other position of the 14x14 key grid).
For another grid the table is resized bicubically to the key grid's size and each query/key
pair takes the entry at its own offset (:class:`~mmext.models.attention.AttentionBiasTable`, shared
with V1, which also caches the per-grid bias in inference); at the pretraining grid the table is
used as it is, so at 224 the model equals the authors'.

Folding: :meth:`switch_to_deploy` folds every BatchNorm into the conv before it, the layer
scales into the last conv of their branch and the query's subsampling shortcut into the centre
tap of its depthwise conv. No BatchNorm remains. It also changes how (not what) some layers
compute, for the CPU: the talking heads run as batched matmuls with ``talking_head1`` folded into
the cached attention bias, the softmax in place and ``talking_head2`` into the scores' memory
(``Attention4D._talking_heads_attention``); every conv followed by GELU (FFN, stem) and every
projection followed by its block's residual sum (FFN ``fc2``, attention ``proj``) runs as one
oneDNN op (:mod:`mmext.models.onednn`; the plain ops when tracing, compiling or with gradients).
The state dict keys do not change.

The attention blocks (:class:`Attention4D`, ``LocalGlobalQuery``, :class:`Attention4DDownsample`)
live in :mod:`mmext.models.efficientformer_v2_attention`, the rest of the family here.

Module names follow timm's layout (``stem.conv1``, ``stages.i.downsample``,
``stages.i.blocks.j.token_mixer``/``mlp``/``ls1``/``ls2``), so timm's checkpoints load as they are
and the authors' map by renaming (:mod:`mmext.checkpoints.efficientformer_v2`).
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn

from mmext.errors import ConfigError
from mmext.models.base import BaseBackbone, BaseStage
from mmext.models.efficientformer_v2_attention import Attention4D, Attention4DDownsample
from mmext.models.layers import ConvBN, LayerScale, drop_path, fold_output_scale
from mmext.models.onednn import conv_gelu
from mmext.registry import MODELS


class ConvFFN(nn.Module):
    """The unified FFN: ``1x1 Conv-BN -> GELU -> 3x3 DW Conv-BN -> GELU -> 1x1 Conv-BN``.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)`` through ``hidden_channels``.
    """

    def __init__(self, channels, hidden_channels):
        super().__init__()
        self.fc1 = ConvBN(channels, hidden_channels, bias=True)
        self.act = nn.GELU()
        self.mid = ConvBN(hidden_channels, hidden_channels, 3, 1, 1, groups=hidden_channels,
                          bias=True)
        self.fc2 = ConvBN(hidden_channels, channels, bias=True)
        self.deploy = False

    def switch_to_deploy(self):
        """After the children fold their BNs: each conv+GELU runs as :func:`conv_gelu`."""
        self.deploy = isinstance(self.fc1.bn, nn.Identity) and isinstance(self.mid.bn,
                                                                           nn.Identity)

    def forward(self, x):
        if self.deploy:
            return self.fc2(conv_gelu(self.mid.conv, conv_gelu(self.fc1.conv, x)))
        x = self.act(self.fc1(x))
        x = self.act(self.mid(x))
        return self.fc2(x)

    def forward_residual(self, x, residual):
        """``residual + self(x)``; in deploy the sum is ``fc2``'s post-op
        (:meth:`~mmext.models.layers.ConvBN.forward_residual`)."""
        if self.deploy:
            return self.fc2.forward_residual(
                conv_gelu(self.mid.conv, conv_gelu(self.fc1.conv, x)), residual)
        return residual + self(x)


class ConvStem(nn.Sequential):
    """``conv1 -> act1 -> conv2 -> act2`` (Conv-BN, GELU); in deploy each conv+GELU pair runs as
    :func:`~mmext.models.onednn.conv_gelu`. Same module names as a plain ``nn.Sequential``.

    Shapes: ``(N, 3, H, W) -> (N, C, ceil(H/4), ceil(W/4))``.
    """

    deploy = False

    def switch_to_deploy(self):
        self.deploy = isinstance(self.conv1.bn, nn.Identity) and isinstance(self.conv2.bn,
                                                                             nn.Identity)

    def forward(self, x):
        if self.deploy:
            return conv_gelu(self.conv2.conv, conv_gelu(self.conv1.conv, x))
        return super().forward(x)


class Downsample(nn.Module):
    """Between stages: 3x3 stride-2 Conv-BN, plus :class:`Attention4DDownsample` if ``use_attn``.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, in_dim, out_dim, use_attn=False, resolution=14):
        super().__init__()
        self.conv = ConvBN(in_dim, out_dim, 3, 2, 1, bias=True)
        self.attn = Attention4DDownsample(in_dim, out_dim, resolution=resolution) if use_attn \
            else None

    def forward(self, x):
        out = self.conv(x)
        if self.attn is not None:
            out = self.attn(x, residual=out)
        return out


class EfficientFormerV2Block(nn.Module):
    """``x + LS1(Attention4D(x))`` (when ``use_attn``), then ``x + LS2(ConvFFN(x))``.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, dim, mlp_ratio=4.0, use_attn=False, resolution=7, stride=1,
                 layer_scale_init_value=1e-5, drop_path_rate=0.0):
        super().__init__()
        if use_attn:
            self.token_mixer = Attention4D(dim, resolution=resolution, stride=stride)
            self.ls1 = LayerScale(dim, layer_scale_init_value, channel_dim=1)
        else:
            self.token_mixer = self.ls1 = None
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init_value, channel_dim=1)
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        if isinstance(self.ls2, nn.Identity) and not (self.training and self.drop_path_rate):
            # deploy: the layer scales are in the projections, the sums their post-ops
            if self.token_mixer is not None:
                x = self.token_mixer(x, residual=x)
            return self.mlp.forward_residual(x, x)
        if self.token_mixer is not None:
            x = x + drop_path(self.ls1(self.token_mixer(x)), self.drop_path_rate, self.training)
        return x + drop_path(self.ls2(self.mlp(x)), self.drop_path_rate, self.training)

    @torch.no_grad()
    def switch_to_deploy(self):
        if isinstance(self.ls1, LayerScale):
            self.token_mixer.proj.switch_to_deploy()
            fold_output_scale(self.token_mixer.proj.conv, self.ls1.gamma)
            self.ls1 = nn.Identity()
        if isinstance(self.ls2, LayerScale):
            self.mlp.fc2.switch_to_deploy()
            fold_output_scale(self.mlp.fc2.conv, self.ls2.gamma)
            self.ls2 = nn.Identity()


class EfficientFormerV2Stage(BaseStage):
    """Optional :class:`Downsample`, then ``depth`` blocks, the last ``num_vit`` with attention.

    Shapes: ``(N, C_in, H, W) -> (N, C, ceil(H/2), ceil(W/2))`` when it downsamples, else
    ``(N, C, H, W)``.
    """

    def __init__(self, in_dim, dim, mlp_ratios, num_vit=0, downsample=True,
                 downsample_attn=False, downsample_resolution=14, attn_resolution=7,
                 attn_stride=1, drop_path_rates=(), layer_scale_init_value=1e-5):
        super().__init__()
        depth = len(mlp_ratios)
        self.downsample = (Downsample(in_dim, dim, downsample_attn, downsample_resolution)
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[
            EfficientFormerV2Block(dim, ratio, use_attn=j >= depth - num_vit,
                                   resolution=attn_resolution, stride=attn_stride,
                                   layer_scale_init_value=layer_scale_init_value,
                                   drop_path_rate=dpr)
            for j, (ratio, dpr) in enumerate(zip(mlp_ratios, drop_path_rates))])

    def forward(self, x):
        return self.run_blocks(self.blocks, self.downsample(x))


@MODELS.register_module()
class EfficientFormerV2(BaseBackbone):
    """EfficientFormerV2 backbone for detection and segmentation.

    Args:
        arch (str | dict): ``'s0'``, ``'s1'``, ``'s2'``, ``'l'`` or a dict with ``embed_dims``
            (4 ints), ``depths`` (4 ints) and ``num_vit`` (attention blocks at the end of stages
            3 and 4), and optionally ``mlp_ratios`` (per stage a number or one per block;
            default 4), ``pretrain_size`` (224: the input size the bias tables were learned
            at) and ``layer_scale_init_value`` (1e-5).
        out_indices (Sequence[int]): stages to return, of 0..3 (strides 4, 8, 16, 32).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``norm_eval`` keeps every BatchNorm, SyncBatchNorm included, in eval mode.
        drop_path_rate (float): stochastic depth, rising linearly over all blocks to this value
            (the authors use 0 for detection and segmentation).

    Shapes: ``(N, 3, H, W) ->`` tuple of ``(N, embed_dims[i], ceil(H/s_i), ceil(W/s_i))`` with
    ``s_i = 4 * 2**i`` for ``i`` in ``out_indices``, for any H and W (see the module docstring
    for odd sizes and for the attention biases at sizes other than 224).
    """

    arch_settings = {
        's0': dict(embed_dims=[32, 48, 96, 176], depths=[2, 2, 6, 4], num_vit=2,
                   mlp_ratios=[4, 4, [4, 3, 3, 3, 4, 4], [4, 3, 3, 4]]),
        's1': dict(embed_dims=[32, 48, 120, 224], depths=[3, 3, 9, 6], num_vit=2,
                   mlp_ratios=[4, 4, [4, 4, 3, 3, 3, 3, 4, 4, 4], [4, 4, 3, 3, 4, 4]]),
        's2': dict(embed_dims=[32, 64, 144, 288], depths=[4, 4, 12, 8], num_vit=4,
                   mlp_ratios=[4, 4, [4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4],
                               [4, 4, 3, 3, 3, 3, 4, 4]]),
        'l': dict(embed_dims=[40, 80, 192, 384], depths=[5, 5, 15, 10], num_vit=6,
                  mlp_ratios=[4, 4, [4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4],
                              [4, 4, 4, 3, 3, 3, 3, 4, 4, 4]]),
    }
    arch_keys = ('embed_dims', 'depths', 'num_vit')
    arch_defaults = dict(mlp_ratios=[4, 4, 4, 4], pretrain_size=224, layer_scale_init_value=1e-5)
    stage_keys = ('embed_dims', 'depths', 'mlp_ratios')
    min_input_size = 1  # padded 3x3 convs; stride attention crops its x2 upsampling

    def __init__(self, arch='s0', out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, drop_path_rate=0.0, attn_impl='auto',
                 deploy=False):
        super().__init__(arch, 4, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         attn_impl)
        dims, depths, num_vit = self.arch['embed_dims'], self.arch['depths'], self.arch['num_vit']
        mlp_ratios = self.block_mlp_ratios(self.arch)
        # Pretraining token grids: stride 16 (downsampling's keys), 32 (both self-attentions)
        grid16 = math.ceil(self.arch['pretrain_size'] / 16)
        grid32 = math.ceil(grid16 / 2)
        total = sum(depths)
        rates = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        self.stem = ConvStem(OrderedDict(
            conv1=ConvBN(3, dims[0] // 2, 3, 2, 1, bias=True), act1=nn.GELU(),
            conv2=ConvBN(dims[0] // 2, dims[0], 3, 2, 1, bias=True), act2=nn.GELU()))
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(EfficientFormerV2Stage(
                dims[max(i - 1, 0)], dims[i], mlp_ratios[i],
                num_vit=num_vit if i >= 2 else 0, downsample=i > 0, downsample_attn=i == 3,
                downsample_resolution=grid16, attn_resolution=grid32,
                attn_stride=2 if i == 2 else 1, drop_path_rates=rates[start:start + depth],
                layer_scale_init_value=self.arch['layer_scale_init_value']))
        self.out_channels = [dims[i] for i in self.out_indices]
        self._init_layers()
        self.finish_init(deploy)

    @classmethod
    def check_arch(cls, arch):
        """Lengths (4 per stage), ``num_vit`` within stages 3 and 4, one MLP ratio per block."""
        arch = super().check_arch(arch)
        depths, num_vit = arch['depths'], arch['num_vit']
        if (not isinstance(num_vit, int) or isinstance(num_vit, bool)
                or not 0 <= num_vit <= min(depths[2], depths[3])):
            raise ConfigError(f'{cls.__name__}: num_vit={num_vit} must be between 0 and the '
                              f'depth of stages 3 and 4 ({depths[2]}, {depths[3]}).')
        cls.block_mlp_ratios(arch)
        size = arch['pretrain_size']
        if not isinstance(size, int) or size < 32:
            raise ConfigError(f'{cls.__name__}: pretrain_size={size!r} must be an int >= 32.')
        return arch

    @classmethod
    def block_mlp_ratios(cls, arch):
        """``mlp_ratios`` as one list per stage with one ratio per block."""
        ratios = []
        for i, ratio in enumerate(arch['mlp_ratios']):
            ratio = ([ratio] * arch['depths'][i] if isinstance(ratio, (int, float))
                     else list(ratio))
            if len(ratio) != arch['depths'][i]:
                raise ConfigError(f'{cls.__name__}: mlp_ratios[{i}] has {len(ratio)} entries '
                                  f'but stage {i} has {arch["depths"][i]} blocks.')
            ratios.append(ratio)
        return ratios

    def _init_layers(self):
        """The authors' initialisation: truncated normal (std 0.02) for the FFNs' 1x1 convs."""
        for m in self.modules():
            if isinstance(m, ConvFFN):
                for conv in (m.fc1.conv, m.fc2.conv):
                    nn.init.trunc_normal_(conv.weight, std=0.02)
                    nn.init.zeros_(conv.bias)

