"""mmext's backbones and necks; they need only torch and mmengine.

Importing this package registers every model in :data:`mmext.registry.MODELS`.
"""
from mmext.models.base import BaseBackbone  # noqa: F401
from mmext.models.necks import TransConvFPN  # noqa: F401
from mmext.models.shvit import SHViT  # noqa: F401
from mmext.models.efficientformer import EfficientFormer  # noqa: F401
from mmext.models.edgevit import EdgeViT  # noqa: F401
from mmext.models.efficientformer_v2 import EfficientFormerV2  # noqa: F401
