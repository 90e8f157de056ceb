"""Names in result summaries: backbone families (from the registry), tasks (from the model type
or the work dir's folders) and datasets.

To add a detector or segmentor, add its model type to :data:`TASK_NAMES`, the
folder its configs live in to :data:`TASK_DIRS` and the (task, metric) it is plotted by to
:data:`PANELS`; nothing else needs to change.
"""
import functools
import os
import os.path as osp
import re

# Model ``type`` of an mmdet/mmseg config -> task name in the summary.
TASK_NAMES = {'RetinaNet': 'RetinaNet', 'MaskRCNN': 'Mask R-CNN', 'FasterRCNN': 'Faster R-CNN',
              'CascadeRCNN': 'Cascade R-CNN', 'FCOS': 'FCOS', 'ATSS': 'ATSS',
              'RTMDet': 'RTMDet', 'YOLOX': 'YOLOX'}
# A folder name under configs/ or work_dirs/ (or a word in a work dir's name) -> task name.
TASK_DIRS = {'retinanet': 'RetinaNet', 'mask_rcnn': 'Mask R-CNN', 'maskrcnn': 'Mask R-CNN',
             'semfpn': 'Semantic FPN', 'sem_fpn': 'Semantic FPN', 'rtmdet': 'RTMDet',
             'yolox': 'YOLOX'}
# Dataset type of the test loader (a substring) -> dataset name.
DATASET_NAMES = {'ADE': 'ADE20K', 'Coco': 'COCO', 'COCO': 'COCO'}
# Which metric each task is plotted by, in panel order.
PANELS = [('RetinaNet', 'bbox_mAP'), ('Mask R-CNN', 'bbox_mAP'), ('Mask R-CNN', 'segm_mAP'),
          ('Semantic FPN', 'mIoU'), ('RTMDet', 'bbox_mAP'), ('YOLOX', 'bbox_mAP')]
# Tasks plotted against the whole detector's latency (``detector_ms``, from a detector
# benchmark JSON) when they have it, instead of the backbone's.
DETECTOR_LATENCY_TASKS = ('RTMDet', 'YOLOX')


@functools.lru_cache(maxsize=None)
def family_names():
    """``{'shvit': 'SHViT', ...}``: every backbone family in mmext's registry, by lower-case key."""
    from mmext.benchmark.protocols import backbone_families
    return {name.lower(): name for name in backbone_families()}



def pretty_backbone(key):
    """``'shvit_s4'`` -> ``'SHViT-S4'`` (the family's name as registered)."""
    family, _, arch = key.rpartition('_')
    return f'{family_names().get(family, family)}-{arch.upper()}' if family else key


def backbone_key(type_name, arch):
    """``('mmext.SHViT', 's4')`` -> ``'shvit_s4'`` (the benchmark's and the configs' name)."""
    type_name = str(type_name).split('.')[-1]
    return f'{type_name.lower()}_{str(arch).lower()}'


def _dataset_name(dataset_type):
    for word, name in DATASET_NAMES.items():
        if word in dataset_type:
            return name
    return dataset_type or None


def identify_from_config(cfg):
    """``backbone``, ``task`` and ``dataset`` of a run from its recorded config (what is known)."""
    model = cfg.get('model') or {}
    model_type = str(model.get('type', '')).split('.')[-1]
    backbone = model.get('backbone') or {}
    info = {}
    if backbone.get('type') and isinstance(backbone.get('arch'), str):
        info['backbone'] = backbone_key(backbone['type'], backbone['arch'])
    if model_type in ('EncoderDecoder', 'CascadeEncoderDecoder'):
        head = str((model.get('decode_head') or {}).get('type', ''))
        info['task'] = 'Semantic FPN' if head.endswith('FPNHead') else \
            (head.replace('Head', '') or 'segmentation')
    elif model_type:
        info['task'] = TASK_NAMES.get(model_type, model_type)
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset = _dataset_name(str((loader.get('dataset') or {}).get('type', '')))
    if dataset:
        info['dataset'] = dataset
    return info


def identify_from_path(work_dir):
    """What a work dir's path says: ``<task folder>/.../<family>_<arch>_..._<dataset>``."""
    info = {}
    name = osp.basename(osp.normpath(work_dir)).lower()
    families = '|'.join(sorted(map(re.escape, family_names()), key=len, reverse=True))
    match = re.match(rf'({families})_([a-z0-9]+)', name)
    if match:
        info['backbone'] = f'{match.group(1)}_{match.group(2)}'
    for part in osp.normpath(work_dir).lower().split(os.sep):
        if part in TASK_DIRS:
            info['task'] = TASK_DIRS[part]
    for word, task in TASK_DIRS.items():
        if word in name:
            info['task'] = task
    if 'coco' in name:
        info['dataset'] = 'COCO'
    elif 'ade' in name:
        info['dataset'] = 'ADE20K'
    return info
