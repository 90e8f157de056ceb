"""EfficientFormer (V1) checkpoint layouts: the authors' release, timm's, and mmext's own.

* official (snap-research/EfficientFormer): ``patch_embed.{0,1,3,4}`` (conv, BN, conv, BN);
  ``network.{0,2,4,6}.j`` are the stages' blocks and ``network.{1,3,5}.{proj,norm}`` the
  downsampling before stages 1-3; ``layer_scale_{1,2}``; Meta4D MLPs ``mlp.fc{1,2}`` +
  ``mlp.norm{1,2}``; ``token_mixer.attention_bias_idxs`` index buffers; ``norm``, ``head``,
  ``dist_head``.
* timm: ``stem.{conv,norm}{1,2}``, ``stages.i.downsample.{conv,norm}``, ``stages.i.blocks.j``,
  ``ls{1,2}.gamma``, ``head_dist``.
* mmpretrain (``EfficientFormer`` backbone; its converted release on download.openmmlab.com
  holds ``backbone.*`` keys, which the loader keeps): ``patch_embed.{0,1}.{conv,bn}``
  (ConvModules); ``network.i`` is stage i's Sequential, whose entry ``0`` is the downsampling
  ConvModule (``conv``/``bn``) in stages 1-3; layer scales are ``ls{1,2}.weight``; Meta4D MLPs
  ``mlp.fc{1,2}`` + ``mlp.norm{1,2}``; ``attention_bias_idxs`` buffers; output norms
  ``norm{i}`` (the classifier's ``norm3``) are dropped; the head is outside ``backbone.``.
* mmext: ``stem.{0,2}.{conv,bn}``, ``stages.i.downsample.{conv,bn}``, ``stages.i.blocks.j``,
  Meta4D MLPs ``mlp.fc{1,2}.{conv,bn}``.

In all source layouts the last stage's block list also holds a parameter-free ``Flat`` module
(before the first Meta3D block) that mmext does not have, so block numbers are made contiguous
per stage. The 7x7-grid ``attention_bias_idxs`` buffers are dropped: mmext rebuilds the indices
for each token grid. The classifier (``norm``, ``head``, ``dist_head``/``head_dist``) is dropped.
"""
import re

from mmext.checkpoints.loading import Layout, identity, register_family, rename_keys
from mmext.checkpoints.zoo import PretrainedWeights, register_weights

_OFFICIAL_RULES = [
    (re.compile(r'^patch_embed\.([0134])\.'),
     lambda m: {'0': 'stem.0.conv.', '1': 'stem.0.bn.', '3': 'stem.2.conv.',
                '4': 'stem.2.bn.'}[m[1]]),
    (re.compile(r'^network\.(\d+)\.(proj|norm)\.'),
     lambda m: f'stages.{(int(m[1]) + 1) // 2}.downsample.{"conv" if m[2] == "proj" else "bn"}.'),
    (re.compile(r'^network\.(\d+)\.(\d+)\.'), lambda m: f'stages.{int(m[1]) // 2}.blocks.{m[2]}.'),
    (re.compile(r'\.layer_scale_([12])$'), r'.ls\1.gamma'),
]

_TIMM_RULES = [
    (re.compile(r'^stem\.(conv|norm)([12])\.'),
     lambda m: f'stem.{2 * (int(m[2]) - 1)}.{"conv" if m[1] == "conv" else "bn"}.'),
    (re.compile(r'^(stages\.\d+\.downsample)\.norm\.'), r'\1.bn.'),
]

_MMPRETRAIN_RULES = [
    (re.compile(r'^patch_embed\.([01])\.(conv|bn)\.'),
     lambda m: f'stem.{2 * int(m[1])}.{m[2]}.'),
    (re.compile(r'^network\.([123])\.0\.(conv|bn)\.'), r'stages.\1.downsample.\2.'),
    (re.compile(r'^network\.(\d+)\.(\d+)\.'), r'stages.\1.blocks.\2.'),
    (re.compile(r'\.ls([12])\.weight$'), r'.ls\1.gamma'),
]
_OUT_NORM = re.compile(r'^norm\d+\.')

_BLOCK = re.compile(r'^(stages\.(\d+)\.blocks\.)(\d+)\.(.*)$')
_CONV_MLP = re.compile(r'^mlp\.(fc|norm)([12])\.(.+)$')


def _finish(state_dict):
    """Shared tail of both mappings (keys already in ``stages.i.blocks.j`` form).

    Makes block numbers contiguous (skipping the ``Flat`` slot), puts the Meta4D MLPs' convs and
    BNs under their Conv-BN pairs, and drops the attention-bias index buffers.
    """
    used = {}
    for key in state_dict:
        m = _BLOCK.match(key)
        if m:
            used.setdefault(m[2], set()).add(int(m[3]))
    renumber = {stage: {j: new for new, j in enumerate(sorted(js))} for stage, js in used.items()}
    attn_blocks = {m[1] + m[3] for m in map(_BLOCK.match, state_dict)
                   if m and m[4].startswith('token_mixer.qkv.')}
    out = {}
    for key, value in state_dict.items():
        if key.endswith('attention_bias_idxs'):
            continue
        m = _BLOCK.match(key)
        if m:
            rest = m[4]
            mlp = _CONV_MLP.match(rest)
            if mlp and m[1] + m[3] not in attn_blocks:
                rest = f'mlp.fc{mlp[2]}.{"conv" if mlp[1] == "fc" else "bn"}.{mlp[3]}'
            key = f'{m[1]}{renumber[m[2]][int(m[3])]}.{rest}'
        out[key] = value
    return out


def efficientformer_from_official(state_dict):
    """Map the authors' EfficientFormer keys (``patch_embed``, ``network.N.M``) to mmext's."""
    return _finish(rename_keys(state_dict, _OFFICIAL_RULES))


def efficientformer_from_timm(state_dict):
    """Map timm's EfficientFormer keys (``stem.conv1``, ``stages.i.blocks.j``) to mmext's."""
    return _finish(rename_keys(state_dict, _TIMM_RULES))


def efficientformer_from_mmpretrain(state_dict):
    """Map mmpretrain's EfficientFormer keys (``patch_embed.k.conv``, ``network.i.j``) to mmext's.

    Block numbers count from 1 after the downsampling entry ``0`` of stages 1-3; ``_finish``
    makes them contiguous from 0. The output norms ``norm{i}`` are dropped.
    """
    kept = {k: v for k, v in state_dict.items() if not _OUT_NORM.match(k)}
    return _finish(rename_keys(kept, _MMPRETRAIN_RULES))


register_family('EfficientFormer', [
    Layout('mmext', lambda keys: any(k.startswith('stem.0.conv.') for k in keys), identity),
    # before 'official': both start with patch_embed/network; only mmpretrain's stem has .conv.
    Layout('mmpretrain', lambda keys: any(k.startswith('patch_embed.0.conv.') for k in keys),
           efficientformer_from_mmpretrain),
    Layout('official', lambda keys: any(k.startswith(('patch_embed.', 'network.')) for k in keys),
           efficientformer_from_official),
    Layout('timm', lambda keys: any(k.startswith('stem.conv1.') for k in keys),
           efficientformer_from_timm),
], head_pattern=r'^(head|head_dist|dist_head|norm)\.')

# mmpretrain's conversion of the authors' weights on download.openmmlab.com (the authors' own are
# on Google Drive only; the hash prefix in each file name is verified on download)
_URL = ('https://download.openmmlab.com/mmclassification/v0/efficientformer/'
        'efficientformer-{}_3rdparty_in1k_{}.pth')
register_weights(*(PretrainedWeights(f'efficientformer_{a}', 'EfficientFormer', a,
                                     _URL.format(a, h), 'mmpretrain')
                   for a, h in (('l1', '20220915-cc3e1ac6'), ('l3', '20220915-466793d6'),
                                ('l7', '20220915-185e30af'))))
