"""EdgeViT checkpoint layouts: the authors' training code's and mmext's own.

The authors (saic-fi/edgevit) released no weights; their code saves ``{'model': state_dict}`` with

* ``patch_embed1``..``patch_embed4`` (``proj`` conv, ``norm`` LayerNorm),
* ``blocks{k}.{j}.LocalAgg.{pos_embed, norm1, conv1, attn, conv2, norm2, mlp.fc1, mlp.fc2}``
  (stages 1-3; ``attn`` is the 5x5 depthwise conv),
* ``blocks{k}.{j}.SelfAttn.{pos_embed, norm1, attn.{qkv, LocalProp, norm, proj}, norm2, mlp}``,
* the classifier: ``norm`` (BatchNorm over the last map) and ``head`` (Linear); both are dropped.

mmext: ``stem``, ``stages.{k-1}.downsample`` (patch embeddings 2-4) and
``stages.{k-1}.blocks.{j}.{local_agg, global_attn}``, where the BNs and the 1x1 convs they
precede are ``BNLinear`` pairs (``.bn`` / ``.linear``).
"""
import re

from mmext.checkpoints.loading import Layout, identity, register_family, rename_keys
from mmext.checkpoints.zoo import register_no_weights

_OFFICIAL_RULES = [(re.compile(pattern), repl) for pattern, repl in [
    (r'^patch_embed1\.', 'stem.'),
    (r'^patch_embed([2-4])\.', lambda m: f'stages.{int(m[1]) - 1}.downsample.'),
    (r'^blocks([1-4])\.(\d+)\.', lambda m: f'stages.{int(m[1]) - 1}.blocks.{m[2]}.'),
    (r'\.LocalAgg\.norm1\.', '.local_agg.aggregate.pw1.bn.'),
    (r'\.LocalAgg\.conv1\.', '.local_agg.aggregate.pw1.linear.'),
    (r'\.LocalAgg\.attn\.', '.local_agg.aggregate.dw.'),
    (r'\.LocalAgg\.conv2\.', '.local_agg.aggregate.pw2.'),
    (r'\.LocalAgg\.norm2\.', '.local_agg.mlp.fc1.bn.'),
    (r'\.LocalAgg\.mlp\.fc1\.', '.local_agg.mlp.fc1.linear.'),
    (r'\.LocalAgg\.', '.local_agg.'),  # pos_embed, mlp.fc2
    (r'\.SelfAttn\.', '.global_attn.'),
    (r'\.attn\.LocalProp\.', '.attn.local_prop.'),
]]


def edgevit_from_official(state_dict):
    """Map the authors' EdgeViT keys (``patch_embed{k}``, ``blocks{k}``) to mmext's."""
    return rename_keys(state_dict, _OFFICIAL_RULES)


register_family('EdgeViT', [
    Layout('mmext', lambda keys: any(k.startswith(('stem.', 'stages.')) for k in keys), identity),
    Layout('official', lambda keys: any(k.startswith(('patch_embed1.', 'blocks1.')) for k in keys),
           edgevit_from_official),
], head_pattern=r'^(head|norm)\.')

register_no_weights(('edgevit_xxs', 'edgevit_xs', 'edgevit_s'),
                    "EdgeViT's authors published none")
