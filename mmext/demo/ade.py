"""A tiny ADE20K-format semantic-segmentation data set of coloured shapes.

Layout (what mmseg's ``ADE20KDataset`` reads)::

    root/images/training/ADE_train_00000001.jpg
    root/annotations/training/ADE_train_00000001.png
    root/images/validation/ADE_val_00000001.jpg
    root/annotations/validation/ADE_val_00000001.png

The label PNGs use ADE20K's own values: 0 = unlabelled (ignored, as ``reduce_zero_label=True``
turns it into 255) and ``k + 1`` for ADE20K class index ``k``. The scene background is
'wall', circles are 'ball', squares 'box' and triangles 'tent', with a thin unlabelled band
around every shape like the unlabelled edges of real ADE20K masks. So the data works both
with the stock 150-class configs and, with ``metainfo=dict(classes=ADE_DEMO_CLASSES)``,
as a 4-class problem (mmseg then remaps the labels through its ``label_map``).
"""
import os
import os.path as osp

import cv2
import numpy as np

from ._stamp import prepare_root, write_stamp
from .shapes import SHAPES, noisy_background, paint, polygon_mask, random_layout, write_rgb_jpg

# ADE20K class names used by the demo, in the order of the 4-class problem.
ADE_DEMO_CLASSES = ('wall', 'ball', 'box', 'tent')
ADE_DEMO_PALETTE = [(120, 120, 120), (255, 0, 0), (0, 200, 0), (0, 0, 255)]
SHAPE_TO_ADE = dict(zip(SHAPES, ADE_DEMO_CLASSES[1:]))
# Values written in the PNGs: ADE20K index + 1 (wall=0, box=41, tent=114, ball=119).
ADE_DEMO_LABEL_VALUES = dict(wall=1, box=42, tent=115, ball=120)
_SPLITS = (('training', 'train'), ('validation', 'val'))


def ade_demo_info(root):
    """Paths and metainfo of a demo set at ``root`` (what configs need)."""
    root = osp.abspath(str(root))
    return dict(
        data_root=root,
        classes=ADE_DEMO_CLASSES,
        metainfo=dict(classes=ADE_DEMO_CLASSES, palette=ADE_DEMO_PALETTE),
        label_values=dict(ADE_DEMO_LABEL_VALUES),
        train_img_path='images/training',
        train_seg_map_path='annotations/training',
        val_img_path='images/validation',
        val_seg_map_path='annotations/validation',
    )


def _make_split(root, split, prefix, num_images, img_size, max_objects, seed, index,
                colour_by_class=True):
    height, width = img_size
    rng = np.random.default_rng([seed, 100 + index])
    kernel = np.ones((5, 5), np.uint8)
    for i in range(num_images):
        name = f'ADE_{prefix}_{i + 1:08d}'
        objects = random_layout(rng, height, width, max_objects,
                                colour_by_class=colour_by_class)
        img = paint(noisy_background(rng, height, width), objects)
        label = np.full((height, width), ADE_DEMO_LABEL_VALUES['wall'], dtype=np.uint8)
        for obj in objects:
            mask = polygon_mask(obj['polygon'], height, width)
            # 2-pixel unlabelled band straddling the outline.
            band = cv2.dilate(mask, kernel) - cv2.erode(mask, kernel)
            label[mask > 0] = ADE_DEMO_LABEL_VALUES[SHAPE_TO_ADE[SHAPES[obj['label']]]]
            label[band > 0] = 0
        write_rgb_jpg(osp.join(root, 'images', split, name + '.jpg'), img)
        if not cv2.imwrite(osp.join(root, 'annotations', split, name + '.png'), label):
            raise OSError(f'could not write the label map of {name}')


def make_ade_demo(root, num_train=32, num_val=8, img_size=128, max_objects=3, seed=0,
                   colour_by_class=True):
    """Write the demo ADE20K set under ``root`` (skipped when already there with the same
    parameters) and return :func:`ade_demo_info`.

    ``img_size`` is an int (square) or ``(height, width)``.
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    img_size = tuple(int(s) for s in img_size)
    params = dict(kind='ade20k', num_train=int(num_train), num_val=int(num_val),
                  img_size=list(img_size), max_objects=int(max_objects), seed=int(seed),
                  colour_by_class=bool(colour_by_class))
    expected = [osp.join('images', s, f'ADE_{p}_{1:08d}.jpg')
                for (s, p), n in zip(_SPLITS, (num_train, num_val)) if n]
    if prepare_root(root, params, expected, ['images', 'annotations']):
        for index, ((split, prefix), num) in enumerate(zip(_SPLITS, (num_train, num_val))):
            for sub in ('images', 'annotations'):
                os.makedirs(osp.join(str(root), sub, split), exist_ok=True)
            _make_split(str(root), split, prefix, num, img_size, max_objects, seed, index,
                        colour_by_class)
        write_stamp(root, params)
    return ade_demo_info(root)
