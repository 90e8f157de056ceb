"""mmext: fast vision-transformer backbones for MMDetection 3.x and MMSegmentation 1.x.

Importing mmext (e.g. through ``custom_imports = dict(imports=['mmext'],
allow_failed_imports=False)``) makes mmengine load its own checkpoints on torch >= 2.6 with
``weights_only=True`` (:mod:`mmext.compat`) and registers every backbone and neck in mmdet's and
mmseg's ``MODELS`` where those are installed (:mod:`mmext.registry`).
"""
from mmext import compat
from mmext.registry import register_all

__version__ = '0.1.0'

compat.install()
register_all()
