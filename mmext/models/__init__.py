"""mmext's backbones and necks; they need only torch and mmengine.

Importing this package registers every model in :data:`mmext.registry.MODELS`: the necks, and
every backbone family of the manifest (:data:`mmext.models.families.FAMILIES`), whose classes
are this package's attributes (``mmext.models.SHViT`` ...).
"""
from mmext.models.base import BaseBackbone  # noqa: F401
from mmext.models.families import FAMILIES
from mmext.models.necks import TransConvFPN  # noqa: F401

for _family in FAMILIES.values():
    globals()[_family.name] = _family.cls  # imports the family's module: registers it
del _family

__all__ = ['BaseBackbone', 'TransConvFPN', *FAMILIES]
