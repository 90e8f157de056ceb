"""EfficientFormerV2 checkpoint layouts: the authors' release, timm's, and mmext's own.

* mmext and timm (``stem.conv1.conv``, ``stages.i.downsample.conv.conv``,
  ``stages.3.downsample.attn``, ``stages.i.blocks.j.token_mixer``/``mlp.fc1.conv``/``ls1.gamma``,
  classifier ``norm``, ``head``, ``head_dist``) share one layout; older timm files also hold
  ``attention_bias_idxs`` buffers, which are dropped.
* official (snap-research/EfficientFormer, ``{'model': ..., 'optimizer': ..., 'model_ema': ...}``,
  the loader keeps ``'model'``): ``patch_embed.{0,1,3,4}`` (conv, BN, -, conv, BN);
  ``network.{0,2,4,6}`` are the stages' blocks and ``network.{1,3,5}`` the downsamplings
  (``proj``/``norm``, and ``conv``/``bn``/``attn`` into stage 4); Conv-BN pairs are ``Sequential``
  children ``.0``/``.1`` (``proj.1``/``proj.2`` after the activation), the FFN is
  ``fc1``/``norm1``/``mid``/``mid_norm``/``fc2``/``norm2``, layer scales are ``layer_scale_1/2``
  of shape ``(C, 1, 1)``; classifier ``norm``, ``head``, ``dist_head``. Its
  ``attention_bias_idxs`` index buffers are built for the 7x7/14x14 grids of a 224 input; the
  model rebuilds indices for each grid, so they are dropped.
"""
import re

from mmext.checkpoints.loading import Layout, register_family, rename_keys
from mmext.checkpoints.zoo import PretrainedWeights, register_weights

_IDX = re.compile(r'(^|\.)attention_bias_idxs$')


def _drop_bias_indices(state_dict):
    return {k: v for k, v in state_dict.items() if not _IDX.search(k)}


def _network_index(m):
    """``network.N`` -> stage blocks (even N) or the downsampling into the next stage (odd N)."""
    n = int(m[1])
    return f'stages.{n // 2}.blocks.' if n % 2 == 0 else f'stages.{(n + 1) // 2}.downsample.'


_OFFICIAL_RULES = [(re.compile(p), r) for p, r in [
    (r'^patch_embed\.0\.', 'stem.conv1.conv.'),
    (r'^patch_embed\.1\.', 'stem.conv1.bn.'),
    (r'^patch_embed\.3\.', 'stem.conv2.conv.'),
    (r'^patch_embed\.4\.', 'stem.conv2.bn.'),
    (r'^network\.(\d+)\.', _network_index),
    # downsampling convs: plain (proj/norm) and with attention (conv/bn)
    (r'(\.downsample)\.(proj|conv)\.(weight|bias)$', r'\1.conv.conv.\3'),
    (r'(\.downsample)\.(norm|bn)\.', r'\1.conv.bn.'),
    # FFN
    (r'\.mlp\.(fc1|fc2|mid)\.(weight|bias)$', r'.mlp.\1.conv.\2'),
    (r'\.mlp\.norm1\.', '.mlp.fc1.bn.'),
    (r'\.mlp\.norm2\.', '.mlp.fc2.bn.'),
    (r'\.mlp\.mid_norm\.', '.mlp.mid.bn.'),
    # attention: Sequential(conv, BN) children, the projections after their activation
    (r'\.q\.local\.0\.', '.q.local.'),
    (r'\.q\.proj\.0\.', '.q.proj.conv.'),
    (r'\.q\.proj\.1\.', '.q.proj.bn.'),
    (r'\.(q|k|v|v_local|stride_conv)\.0\.', r'.\1.conv.'),
    (r'\.(q|k|v|v_local|stride_conv)\.1\.', r'.\1.bn.'),
    (r'\.(token_mixer|attn)\.proj\.1\.', r'.\1.proj.conv.'),
    (r'\.(token_mixer|attn)\.proj\.2\.', r'.\1.proj.bn.'),
    (r'\.layer_scale_1$', '.ls1.gamma'),
    (r'\.layer_scale_2$', '.ls2.gamma'),
    (r'^dist_head\.', 'head_dist.'),
]]


def efficientformer_v2_from_official(state_dict):
    """Map the authors' keys (``patch_embed``, ``network.N``) to mmext's."""
    out = rename_keys(_drop_bias_indices(state_dict), _OFFICIAL_RULES)
    return {k: (v.flatten() if k.endswith(('ls1.gamma', 'ls2.gamma')) else v)
            for k, v in out.items()}


def efficientformer_v2_from_timm(state_dict):
    """timm's keys are mmext's; only old index buffers are dropped."""
    return _drop_bias_indices(state_dict)


register_family('EfficientFormerV2', [
    Layout('official', lambda keys: any(k.startswith(('network.', 'patch_embed.')) for k in keys),
           efficientformer_v2_from_official),
    Layout('mmext/timm', lambda keys: any(k.startswith(('stem.', 'stages.')) for k in keys),
           efficientformer_v2_from_timm),
], head_pattern=r'^(head|head_dist|dist_head|norm)\.')

# timm's snap_dist_in1k weights on the Hugging Face hub (the authors' are on Google Drive only)
_URL = ('https://huggingface.co/timm/efficientformerv2_{}.snap_dist_in1k/resolve/main/'
        'model.safetensors')
register_weights(*(PretrainedWeights(f'efficientformerv2_{a}', 'EfficientFormerV2', a,
                                     _URL.format(a), 'mmext/timm')
                   for a in ('s0', 's1', 's2', 'l')))
