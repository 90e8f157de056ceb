"""SHViT checkpoint layouts: the authors' release, timm's, and mmext's own.

* official (ysj9909/SHViT): ``patch_embed.{0,2,4,6}.c``, ``blocks{1,2,3}.j``; in ``blocks2``/
  ``blocks3`` entries 0-2 are the downsampling (``0.0`` DWConv, ``0.1`` FFN, ``1`` PatchMerging,
  ``2.0`` DWConv, ``2.1`` FFN) and blocks start at 3; Conv-BN children are ``c``/``bn``; some 1x1
  conv weights are stored as 2-D matrices; classifier ``head``/``head_dist``.
* timm: ``patch_embed``, ``stages.i.downsample.k``, ``stages.i.blocks.j``, children ``c``/``bn``.
* mmext: ``stem``, ``stages.i.downsample.k``, ``stages.i.blocks.j``, children ``conv``/``bn``.
"""
import re

from mmext.checkpoints.loading import Layout, identity, register_family, rename_keys
from mmext.checkpoints.zoo import PretrainedWeights, register_weights

_COMMON_RULES = [
    (re.compile(r'^patch_embed\.'), 'stem.'),
    (re.compile(r'\.c\.(weight|bias)$'), r'.conv.\1'),
]

_OFFICIAL_RULES = [
    (re.compile(r'^blocks1\.'), 'stages.0.blocks.'),
    (re.compile(r'^blocks([23])\.0\.([01])\.'),
     lambda m: f'stages.{int(m[1]) - 1}.downsample.{m[2]}.'),
    (re.compile(r'^blocks([23])\.1\.'), lambda m: f'stages.{int(m[1]) - 1}.downsample.2.'),
    (re.compile(r'^blocks([23])\.2\.([01])\.'),
     lambda m: f'stages.{int(m[1]) - 1}.downsample.{3 + int(m[2])}.'),
    (re.compile(r'^blocks([23])\.(\d+)\.'),
     lambda m: f'stages.{int(m[1]) - 1}.blocks.{int(m[2]) - 3}.'),
] + _COMMON_RULES


def _conv_weights_4d(state_dict):
    """Give 2-D conv weights (stored as matrices by the authors) their 1x1 kernel dimensions."""
    return {k: (v[:, :, None, None] if v.ndim == 2 and not k.startswith(('head', 'head_dist'))
                else v) for k, v in state_dict.items()}


def shvit_from_official(state_dict):
    """Map the authors' SHViT keys (``blocks1``..``blocks3``) to mmext's."""
    return _conv_weights_4d(rename_keys(state_dict, _OFFICIAL_RULES))


def shvit_from_timm(state_dict):
    """Map timm's SHViT keys (``stages.i.downsample``/``blocks``, ``.c``) to mmext's."""
    return _conv_weights_4d(rename_keys(state_dict, _COMMON_RULES))


register_family('SHViT', [
    Layout('mmext', lambda keys: any(k.startswith('stem.') for k in keys), identity),
    Layout('official', lambda keys: any(k.startswith('blocks1.') for k in keys),
           shvit_from_official),
    Layout('timm', lambda keys: any(k.startswith('stages.') for k in keys)
           and any(k.startswith('patch_embed.') for k in keys), shvit_from_timm),
])

# the authors' GitHub release (ysj9909/SHViT v1.0), in their layout
_URL = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_{}.pth'
register_weights(*(PretrainedWeights(f'shvit_{a}', 'SHViT', a, _URL.format(a), 'official')
                   for a in ('s1', 's2', 's3', 's4')))
