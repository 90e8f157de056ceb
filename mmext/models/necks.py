"""Necks for backbones with few output levels.

SHViT ends at stride 16 (its levels are 16/32/64), so detection and segmentation heads that want
stride 4 or 8 maps need finer levels synthesised from the stride-16 one. :class:`TransConvFPN`
is an FPN whose extra fine levels come from stride-2 transposed convolutions on the finest
lateral, as the SHViT authors' detection code does.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmext.errors import ConfigError
from mmext.registry import MODELS

_NORMS = {'BN': nn.BatchNorm2d, 'SyncBN': nn.SyncBatchNorm}


def _conv(in_channels, out_channels, kernel_size, stride=1, norm_cfg=None, transposed=False):
    """A conv (or transposed conv) with an optional norm; bias only without a norm."""
    padding = 0 if transposed else kernel_size // 2
    conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = conv_type(in_channels, out_channels, kernel_size, stride, padding,
                     bias=norm_cfg is None)
    if norm_cfg is None:
        return conv
    norm_type = norm_cfg.get('type')
    if norm_type == 'GN':
        norm = nn.GroupNorm(norm_cfg['num_groups'], out_channels)
    elif norm_type in _NORMS:
        norm = _NORMS[norm_type](out_channels)
    else:
        raise ConfigError(f"TransConvFPN: norm_cfg type {norm_type!r} is not one of "
                          f"{sorted(_NORMS) + ['GN']}.")
    return nn.Sequential(conv, norm)


@MODELS.register_module()
class TransConvFPN(BaseModule):
    """FPN with finer levels made by stride-2 transposed convs from the finest backbone level.

    Laterals (1x1) and a top-down pathway (nearest upsampling, addition) over the backbone levels
    ``start_level..end_level``; then ``num_trans_convs`` stride-2 2x2 transposed convs, each from
    the previous finer lateral, add levels at half the stride; 3x3 convs smooth every level.
    Coarser extra levels come from max-pooling (``add_extra_convs=False``) or stride-2 3x3 convs
    (``'on_input'``: first on the last backbone map, ``'on_output'``: on the last output).
    Outputs are ordered finest first; when ``num_outs`` is smaller than the levels built, the
    coarsest ones are left out (they still feed the top-down pathway).

    For a backbone at strides 16/32/64: ``num_trans_convs=2, num_outs=5`` gives 4..64 (Mask R-CNN),
    ``num_trans_convs=1, num_outs=5, add_extra_convs='on_input'`` gives 8..128 (RetinaNet),
    ``num_trans_convs=2, num_outs=4`` gives 4..32 (Semantic FPN).

    Args:
        in_channels (list[int]): channels of each backbone output.
        out_channels (int): channels of every output level.
        num_outs (int): number of output levels.
        num_trans_convs (int): finer levels made by transposed convs.
        start_level (int), end_level (int): backbone levels used (``end_level`` exclusive,
            ``-1`` = all).
        add_extra_convs (bool | str): ``False``, ``'on_input'`` or ``'on_output'``.
        relu_before_extra_convs (bool): ReLU before the second and later extra convs.
        norm_cfg (dict | None): ``dict(type='BN' | 'SyncBN')`` or ``dict(type='GN', num_groups=..)``.

    Shapes: list of ``(N, in_channels[i], H_i, W_i)`` -> tuple of ``num_outs`` maps
    ``(N, out_channels, H_j, W_j)``.
    """

    def __init__(self, in_channels, out_channels, num_outs, num_trans_convs=2, start_level=0,
                 end_level=-1, add_extra_convs=False, relu_before_extra_convs=False,
                 norm_cfg=None,
                 init_cfg=dict(type='Xavier', layer=['Conv2d', 'ConvTranspose2d'],
                               distribution='uniform')):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, (list, tuple)) or not in_channels:
            raise ConfigError('TransConvFPN: in_channels must be a non-empty list of channels.')
        self.in_channels = list(in_channels)
        self.end_level = len(in_channels) if end_level == -1 else end_level
        if not 0 <= start_level < self.end_level <= len(in_channels):
            raise ConfigError(f'TransConvFPN: need 0 <= start_level ({start_level}) < end_level '
                              f'({end_level}) <= {len(in_channels)}.')
        if add_extra_convs not in (False, 'on_input', 'on_output'):
            raise ConfigError("TransConvFPN: add_extra_convs must be False, 'on_input' or "
                              f"'on_output', not {add_extra_convs!r}.")
        self.start_level = start_level
        self.num_outs = num_outs
        self.num_trans_convs = num_trans_convs
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        used = self.in_channels[start_level:self.end_level]

        self.lateral_convs = nn.ModuleList(_conv(c, out_channels, 1, norm_cfg=norm_cfg)
                                           for c in used)
        # Levels past num_outs still feed the top-down pathway but get no output conv, so every
        # parameter receives a gradient (DDP needs no find_unused_parameters).
        num_smoothed = max(0, min(len(used), num_outs - num_trans_convs))
        self.fpn_convs = nn.ModuleList(_conv(out_channels, out_channels, 3, norm_cfg=norm_cfg)
                                       for _ in range(num_smoothed))
        self.trans_convs = nn.ModuleList(
            _conv(out_channels, out_channels, 2, 2, norm_cfg=norm_cfg, transposed=True)
            for _ in range(num_trans_convs))
        self.trans_fpn_convs = nn.ModuleList(
            _conv(out_channels, out_channels, 3, norm_cfg=norm_cfg)
            for _ in range(num_trans_convs))
        num_extra = max(0, num_outs - num_trans_convs - len(used))
        self.extra_convs = nn.ModuleList()
        if add_extra_convs:
            for i in range(num_extra):
                in_ch = used[-1] if i == 0 and add_extra_convs == 'on_input' else out_channels
                self.extra_convs.append(_conv(in_ch, out_channels, 3, 2, norm_cfg=norm_cfg))

    def forward(self, inputs):
        if len(inputs) != len(self.in_channels):
            raise ConfigError(f'TransConvFPN got {len(inputs)} inputs but in_channels has '
                              f'{len(self.in_channels)}; match it to the backbone\'s out_indices.')
        feats = inputs[self.start_level:self.end_level]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode='nearest')
        finer, prev = [], laterals[0]
        for trans_conv in self.trans_convs:
            prev = trans_conv(prev)
            finer.insert(0, prev)
        outs = [conv(x) for conv, x in zip(self.trans_fpn_convs[::-1], finer)]
        outs += [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        if self.add_extra_convs:
            source = feats[-1] if self.add_extra_convs == 'on_input' else outs[-1]
            for i, conv in enumerate(self.extra_convs):
                if i > 0:
                    source = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(conv(source))
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs[:self.num_outs])
