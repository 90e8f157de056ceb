"""The pretrained weights mmext knows: model name -> where they come from (one table, filled by
the families' layout modules, ``mmext/checkpoints/<family>.py``).

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


#: model name -> :class:`PretrainedWeights`; each family's layout module adds its own
#: (:func:`register_weights`) when :mod:`mmext.checkpoints` imports it
ZOO = {}
#: model name -> why it has configs but no released weights (:func:`register_no_weights`)
NO_RELEASED_WEIGHTS = {}


def register_weights(*weights):
    """Add :class:`PretrainedWeights` entries to :data:`ZOO` (a family's layout module does)."""
    for w in weights:
        ZOO[w.name] = w


def register_no_weights(names, reason):
    """Record models that have configs but no released weights, and why (one clear error)."""
    for name in names:
        NO_RELEASED_WEIGHTS[name] = reason


def get_weights(name):
    """The :class:`PretrainedWeights` of a model name (``'shvit_s4'``), or one clear error."""
    key = name.lower()
    if key in ZOO:
        return ZOO[key]
    if key in NO_RELEASED_WEIGHTS:
        raise ConfigError(
            f'{name} has no released ImageNet weights ({NO_RELEASED_WEIGHTS[key]}); train '
            f'it yourself and point init_cfg.checkpoint at the file, or train from scratch.')
    raise ConfigError(f'Unknown model {name!r}; models with weights: {", ".join(ZOO)}.')


def weights_for_url(url):
    """The zoo entry whose canonical URL is ``url`` (``None`` if it is not one of them)."""
    for weights in ZOO.values():
        if weights.url == url:
            return weights
    return None
