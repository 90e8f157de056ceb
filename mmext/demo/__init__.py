"""Deterministic synthetic data sets for demos and tests (no download needed).

``make_coco_demo`` writes a COCO-format instance-segmentation set read by mmdet's
``CocoDataset``; ``make_ade_demo`` writes an ADE20K-format semantic-segmentation set read by
mmseg's ``ADE20KDataset``. Both are seeded and skip work when the same set already exists.
"""
from .ade import ADE_DEMO_CLASSES, ADE_DEMO_LABEL_VALUES, ade_demo_info, make_ade_demo
from .coco import COCO_DEMO_CLASSES, coco_demo_info, make_coco_demo

__all__ = [
    'make_coco_demo', 'coco_demo_info', 'COCO_DEMO_CLASSES',
    'make_ade_demo', 'ade_demo_info', 'ADE_DEMO_CLASSES', 'ADE_DEMO_LABEL_VALUES',
]
