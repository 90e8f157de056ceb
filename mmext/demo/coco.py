"""A tiny COCO-format instance-segmentation data set of coloured shapes.

Layout (what mmdet's ``CocoDataset`` reads)::

    root/annotations/instances_train.json
    root/annotations/instances_val.json
    root/train/000000.jpg ...
    root/val/000000.jpg ...
"""
import json
import os.path as osp

import numpy as np

from ._stamp import prepare_root, write_stamp
from .shapes import SHAPES, noisy_background, paint, polygon_mask, random_layout, write_rgb_jpg

COCO_DEMO_CLASSES = SHAPES
COCO_DEMO_PALETTE = [(220, 20, 60), (0, 160, 80), (30, 60, 220)]
_SPLITS = ('train', 'val')


def coco_demo_info(root):
    """Paths and metainfo of a demo set at ``root`` (what configs need)."""
    root = osp.abspath(str(root))
    return dict(
        data_root=root,
        classes=COCO_DEMO_CLASSES,
        metainfo=dict(classes=COCO_DEMO_CLASSES, palette=COCO_DEMO_PALETTE),
        train_ann_file='annotations/instances_train.json',
        val_ann_file='annotations/instances_val.json',
        train_img_prefix='train/',
        val_img_prefix='val/',
    )


def _make_split(root, split, num_images, img_size, max_objects, seed,
                colour_by_class=True):
    height, width = img_size
    # One independent, reproducible stream per split.
    rng = np.random.default_rng([seed, _SPLITS.index(split)])
    images, annotations = [], []
    for i in range(num_images):
        file_name = f'{i:06d}.jpg'
        objects = random_layout(rng, height, width, max_objects,
                                colour_by_class=colour_by_class)
        img = paint(noisy_background(rng, height, width), objects)
        write_rgb_jpg(osp.join(root, split, file_name), img)
        image_id = i + 1
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for obj in objects:
            mask = polygon_mask(obj['polygon'], height, width)
            ys, xs = np.nonzero(mask)
            x0, y0 = int(xs.min()), int(ys.min())
            w, h = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
            annotations.append(dict(
                id=len(annotations) + 1,
                image_id=image_id,
                category_id=obj['label'] + 1,
                bbox=[float(x0), float(y0), float(w), float(h)],
                area=float(mask.sum()),
                segmentation=[[float(v) for v in obj['polygon'].reshape(-1)]],
                iscrowd=0,
            ))
    coco = dict(
        info=dict(description='mmext synthetic shapes (demo)', version='1.0'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=name, supercategory='shape')
                    for k, name in enumerate(COCO_DEMO_CLASSES)],
    )
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def make_coco_demo(root, num_train=64, num_val=16, img_size=256, max_objects=3, seed=0,
                   colour_by_class=True):
    """Write the demo COCO set under ``root`` (skipped when already there with the same
    parameters) and return :func:`coco_demo_info`.

    ``img_size`` is an int (square) or ``(height, width)``.
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    img_size = tuple(int(s) for s in img_size)
    params = dict(kind='coco', num_train=int(num_train), num_val=int(num_val),
                  img_size=list(img_size), max_objects=int(max_objects), seed=int(seed),
                  colour_by_class=bool(colour_by_class))
    expected = [osp.join('annotations', f'instances_{s}.json') for s in _SPLITS]
    if prepare_root(root, params, expected, ['train', 'val', 'annotations']):
        for split, num in zip(_SPLITS, (num_train, num_val)):
            _make_split(str(root), split, num, img_size, max_objects, seed, colour_by_class)
        write_stamp(root, params)
    return coco_demo_info(root)
