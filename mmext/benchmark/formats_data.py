"""The evaluation images of the formats benchmark and their bbox AP.

* :func:`find_coco` / :func:`load_eval_set` -- a COCO-format folder (``annotations/
  instances_val2017.json`` and ``val2017/``, or mmext's demo layout ``annotations/
  instances_val.json`` and ``val/``), or mmext's generated demo validation set
  (:func:`mmext.demo.make_coco_demo`) when none is given;
* :func:`label_map` -- the model's class indices onto the data's (by name; folded when the names
  do not overlap at all, e.g. random COCO weights on the demo shapes);
* :func:`bbox_ap` -- mmdet's ``CocoMetric`` (pycocotools) on predictions in original image
  pixels, the same scoring for every format.
"""
import json
import os
import os.path as osp

import numpy as np

from mmext.errors import ConfigError, DatasetNotFoundError
from mmext.utils import quiet

#: what --data folders are searched for, in order
ANN_NAMES = ('instances_val2017.json', 'instances_val.json')
DEMO_VAL = dict(num_train=0, num_val=16, img_size=256, seed=0)


def find_coco(root):
    """``(ann_file, image_folder)`` of a COCO-format folder ``root`` (see the module docstring)
    or of a COCO json file itself (images beside it or in the folder named like its split)."""
    root = osp.abspath(osp.expanduser(str(root)))
    if osp.isfile(root) and root.endswith('.json'):
        ann, base = root, osp.dirname(osp.dirname(root))
    elif osp.isdir(root):
        folder = osp.join(root, 'annotations')
        found = [osp.join(folder, n) for n in ANN_NAMES if osp.isfile(osp.join(folder, n))]
        if not found and osp.isdir(folder):
            found = sorted(osp.join(folder, n) for n in os.listdir(folder)
                           if n.startswith('instances_') and 'val' in n and n.endswith('.json'))
        if not found:
            raise DatasetNotFoundError(
                f'--data {root!r} has no annotations/instances_val2017.json (COCO) or '
                'annotations/instances_val.json (mmext demo); give a COCO-format folder.')
        ann, base = found[0], root
    else:
        raise DatasetNotFoundError(f'--data {root!r} does not exist (a COCO-format folder: '
                                   'annotations/instances_val2017.json + val2017/).')
    split = osp.splitext(osp.basename(ann))[0][len('instances_'):]
    for folder in (osp.join(base, split), osp.join(base, 'images', split),
                   osp.join(base, 'images'), base):
        if split and osp.isdir(folder):
            return ann, folder
    return ann, base


def load_eval_set(ann_file, image_folder, max_images=None):
    """The evaluation images: ``dict(ann_file, classes, images=[dict(id, path, height,
    width)])``, images in the json's order, at most ``max_images``; every file must exist."""
    try:
        with open(ann_file) as f:
            coco = json.load(f)
        images = coco['images']
        categories = sorted(coco['categories'], key=lambda c: c['id'])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f'{ann_file!r} is not a COCO annotation file ({type(exc).__name__}: '
                          f'{str(exc)[:80]}).') from None
    if max_images:
        images = images[:int(max_images)]
    if not images:
        raise DatasetNotFoundError(f'{ann_file!r} lists no images.')
    out = []
    for img in images:
        path = osp.join(image_folder, img['file_name'])
        if not osp.isfile(path):
            raise DatasetNotFoundError(f'image {img["file_name"]!r} of {ann_file!r} is not in '
                                       f'{image_folder!r}.')
        out.append(dict(id=img['id'], path=path, height=int(img['height']),
                        width=int(img['width'])))
    return dict(ann_file=ann_file, image_folder=image_folder,
                classes=[str(c['name']) for c in categories], images=out)


def demo_eval_set(root, max_images=None):
    """mmext's generated demo validation set (16 images, 256 px, 3 shape classes) under
    ``root`` (written there, or reused when it is already there)."""
    from mmext.demo import make_coco_demo
    info = make_coco_demo(root, **DEMO_VAL)
    ann = osp.join(info['data_root'], info['val_ann_file'])
    return load_eval_set(ann, osp.join(info['data_root'], info['val_img_prefix']), max_images)


def read_images(eval_set):
    """The BGR uint8 images of the set (as mmdet's LoadImageFromFile reads them)."""
    import cv2
    images = []
    for img in eval_set['images']:
        data = cv2.imread(img['path'], cv2.IMREAD_COLOR)
        if data is None:
            raise DatasetNotFoundError(f'cannot read image {img["path"]!r}.')
        images.append(data)
    return images


def label_map(model_classes, data_classes):
    """``(mapping, note)``: ``mapping[i]`` is the data's class index for the model's class ``i``
    (-1: not in the data, dropped). By name when any name is shared; when none is, the model's
    labels are folded onto the data's (``i % C``: the AP then compares formats with each other,
    not the model with the data) and ``note`` says so."""
    index = {name: i for i, name in enumerate(data_classes)}
    shared = [n for n in model_classes if n in index]
    if shared:
        mapping = np.array([index.get(n, -1) for n in model_classes], dtype=np.int64)
        if len(shared) == len(model_classes) == len(data_classes):
            return mapping, None
        return mapping, (f'{len(shared)} of the model\'s {len(model_classes)} classes are in '
                         'the data (by name); the others\' detections are dropped')
    c = len(data_classes)
    return (np.arange(len(model_classes), dtype=np.int64) % c,
            f'the model\'s {len(model_classes)} class names and the data\'s {c} do not overlap: '
            f'labels folded onto the data\'s classes (label % {c}), so AP compares the formats '
            'with each other only')


def bbox_ap(eval_set, predictions, mapping):
    """``dict(bbox_ap, bbox_ap50)`` of ``predictions`` (one :func:`~mmext.deploy.
    detector_runtime.postprocess` dict per image of ``eval_set``, in order) by mmdet's
    ``CocoMetric``; 0 for a set without any detection."""
    import torch
    from mmdet.evaluation import CocoMetric
    if len(predictions) != len(eval_set['images']):
        raise ConfigError(f'{len(predictions)} predictions for '
                          f'{len(eval_set["images"])} images.')
    with _quiet():
        metric = CocoMetric(ann_file=eval_set['ann_file'], metric='bbox')
    metric.dataset_meta = dict(classes=tuple(eval_set['classes']))
    total = 0
    for img, pred in zip(eval_set['images'], predictions):
        labels = mapping[np.asarray(pred['labels'], dtype=np.int64)]
        keep = labels >= 0
        total += int(keep.sum())
        metric.process({}, [dict(
            img_id=img['id'], ori_shape=(img['height'], img['width']),
            pred_instances=dict(
                bboxes=torch.from_numpy(np.asarray(pred['bboxes'], np.float32)[keep]),
                scores=torch.from_numpy(np.asarray(pred['scores'], np.float32)[keep]),
                labels=torch.from_numpy(labels[keep])))])
    if total == 0:
        return dict(bbox_ap=0.0, bbox_ap50=0.0)
    with _quiet():
        result = metric.evaluate(len(predictions))
    return dict(bbox_ap=float(result.get('coco/bbox_mAP', 0.0)),
                bbox_ap50=float(result.get('coco/bbox_mAP_50', 0.0)))


def _quiet():
    """pycocotools prints its summary and mmengine's logger the table: both kept off stdout."""
    from mmengine.logging import MMLogger
    return quiet(MMLogger.get_current_instance(), stdout=True)
