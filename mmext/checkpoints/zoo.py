"""The pretrained weights mmext knows: model name -> where they come from (one table).

Every config of a model points its backbone ``init_cfg.checkpoint`` at the URL listed here (the
OpenMMLab convention of literal URLs in configs); :mod:`mmext.checkpoints.sources` downloads,
caches and verifies them, and ``tools/download_weights.py`` fetches them ahead of time.

Sources, one per model:

* SHViT S1-S4: the authors' GitHub release (ysj9909/SHViT v1.0), authors' layout.
* EfficientFormer L1/L3/L7: mmpretrain's conversion of the authors' weights on
  download.openmmlab.com (mmpretrain layout). The authors published theirs only on Google Drive,
  which cannot be fetched by a plain URL; timm's copies are behind the Hugging Face hub (no
  hash in the name). The OpenMMLab files are plain HTTPS downloads and carry the first 8 hex
  digits of their sha256 in the file name, so every download is verified.
* EfficientFormerV2 S0/S1/S2/L: timm's ``snap_dist_in1k`` weights on the Hugging Face hub
  (``model.safetensors``, timm's layout). The authors' release is on Google Drive only.
* EdgeViT: no released weights (not listed; its configs use a local file or train from scratch).
"""
from dataclasses import dataclass
from typing import Optional

from mmext.errors import ConfigError


@dataclass(frozen=True)
class PretrainedWeights:
    """One model's ImageNet weights.

    Attributes:
        name: mmext's model name (``'shvit_s4'``), also the config file prefix.
        family: backbone class (``'SHViT'``).
        arch: the arch the weights fit.
        url: canonical download URL.
        layout: the source layout the file is in (a :mod:`mmext.checkpoints` layout name).
        sha256: full sha256 hex digest or a prefix of it, when known; a hash in an OpenMMLab file
            name (``..._20220915-cc3e1ac6.pth``) is used when this is ``None``.
    """
    name: str
    family: str
    arch: str
    url: str
    layout: str
    sha256: Optional[str] = None


_SHVIT = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_{}.pth'
_OPENMMLAB = ('https://download.openmmlab.com/mmclassification/v0/efficientformer/'
              'efficientformer-{}_3rdparty_in1k_{}.pth')
_TIMM_HF = ('https://huggingface.co/timm/efficientformerv2_{}.snap_dist_in1k/resolve/main/'
            'model.safetensors')

ZOO = {w.name: w for w in [
    *(PretrainedWeights(f'shvit_{a}', 'SHViT', a, _SHVIT.format(a), 'official')
      for a in ('s1', 's2', 's3', 's4')),
    PretrainedWeights('efficientformer_l1', 'EfficientFormer', 'l1',
                      _OPENMMLAB.format('l1', '20220915-cc3e1ac6'), 'mmpretrain'),
    PretrainedWeights('efficientformer_l3', 'EfficientFormer', 'l3',
                      _OPENMMLAB.format('l3', '20220915-466793d6'), 'mmpretrain'),
    PretrainedWeights('efficientformer_l7', 'EfficientFormer', 'l7',
                      _OPENMMLAB.format('l7', '20220915-185e30af'), 'mmpretrain'),
    *(PretrainedWeights(f'efficientformerv2_{a}', 'EfficientFormerV2', a, _TIMM_HF.format(a),
                        'mmext/timm') for a in ('s0', 's1', 's2', 'l')),
]}

#: models that have configs but no released weights
NO_RELEASED_WEIGHTS = ('edgevit_xxs', 'edgevit_xs', 'edgevit_s')


def get_weights(name):
    """The :class:`PretrainedWeights` of a model name (``'shvit_s4'``), or one clear error."""
    key = name.lower()
    if key in ZOO:
        return ZOO[key]
    if key in NO_RELEASED_WEIGHTS:
        raise ConfigError(
            f'{name} has no released ImageNet weights (EdgeViT\'s authors published none); train '
            f'it yourself and point init_cfg.checkpoint at the file, or train from scratch.')
    raise ConfigError(f'Unknown model {name!r}; models with weights: {", ".join(ZOO)}.')


def weights_for_url(url):
    """The zoo entry whose canonical URL is ``url`` (``None`` if it is not one of them)."""
    for weights in ZOO.values():
        if weights.url == url:
            return weights
    return None
