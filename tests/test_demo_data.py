"""The generated demo data sets: valid files, read by mmdet/mmseg, deterministic."""
import hashlib
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mmext.demo import (ADE_DEMO_CLASSES, ADE_DEMO_LABEL_VALUES, COCO_DEMO_CLASSES,
                        make_ade_demo, make_coco_demo)


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.startswith('.mmext_demo'):
                continue
            path = osp.join(dirpath, name)
            h.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def test_coco_files_are_valid(coco_demo):
    root = coco_demo['data_root']
    for split, num in (('train', coco_demo['num_train']), ('val', coco_demo['num_val'])):
        with open(osp.join(root, coco_demo[f'{split}_ann_file'])) as f:
            coco = json.load(f)
        assert [c['name'] for c in coco['categories']] == list(COCO_DEMO_CLASSES)
        assert len(coco['images']) == num
        ids = {im['id'] for im in coco['images']}
        assert len(coco['annotations']) >= num  # every image has at least one shape
        for im in coco['images']:
            img = cv2.imread(osp.join(root, coco_demo[f'{split}_img_prefix'], im['file_name']))
            assert img is not None and img.shape == (im['height'], im['width'], 3)
        for ann in coco['annotations']:
            assert ann['image_id'] in ids and ann['iscrowd'] == 0
            assert ann['category_id'] in (1, 2, 3)
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= coco_demo['img_size'] and y + h <= coco_demo['img_size']
            poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
            assert len(poly) >= 3
            # the polygon lies in its box (to the pixel) and the area is the mask's
            assert poly[:, 0].min() >= x - 1 and poly[:, 0].max() <= x + w
            assert poly[:, 1].min() >= y - 1 and poly[:, 1].max() <= y + h
            assert 0.4 * w * h < ann['area'] <= w * h


def test_coco_read_by_mmdet(coco_demo):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(
        data_root=coco_demo['data_root'], ann_file=coco_demo['train_ann_file'],
        data_prefix=dict(img=coco_demo['train_img_prefix']), metainfo=coco_demo['metainfo'],
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='PackDetInputs')])
    assert len(ds) == coco_demo['num_train']
    assert ds.metainfo['classes'] == COCO_DEMO_CLASSES
    sample = ds[0]
    inst = sample['data_samples'].gt_instances
    assert sample['inputs'].shape[1:] == (coco_demo['img_size'],) * 2
    assert len(inst) >= 1 and inst.labels.max() < 3
    # the decoded polygon masks cover the shapes
    masks = inst.masks.to_ndarray()
    assert masks.shape[1:] == (coco_demo['img_size'],) * 2 and masks.sum() > 0


def test_ade_files_are_valid(ade_demo):
    root = ade_demo['data_root']
    allowed = {0, *ADE_DEMO_LABEL_VALUES.values()}
    for split in ('train', 'val'):
        imgs = sorted(os.listdir(osp.join(root, ade_demo[f'{split}_img_path'])))
        segs = sorted(os.listdir(osp.join(root, ade_demo[f'{split}_seg_map_path'])))
        assert len(imgs) == ade_demo[f'num_{split}'] and len(segs) == len(imgs)
        assert [osp.splitext(n)[0] for n in imgs] == [osp.splitext(n)[0] for n in segs]
        for name in segs:
            seg = cv2.imread(osp.join(root, ade_demo[f'{split}_seg_map_path'], name),
                             cv2.IMREAD_UNCHANGED)
            assert seg.dtype == np.uint8 and seg.ndim == 2
            values = set(np.unique(seg).tolist())
            assert values <= allowed
            assert 0 in values and ADE_DEMO_LABEL_VALUES['wall'] in values
            assert len(values) >= 3  # unlabelled band, background and at least one shape


@pytest.mark.parametrize('classes', [None, ADE_DEMO_CLASSES])
def test_ade_read_by_mmseg(ade_demo, classes):
    """Full 150-class ADE20K labels, or the 4 demo classes through mmseg's label_map."""
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    kwargs = {} if classes is None else dict(metainfo=dict(classes=classes))
    ds = ADE20KDataset(
        data_root=ade_demo['data_root'],
        data_prefix=dict(img_path=ade_demo['train_img_path'],
                         seg_map_path=ade_demo['train_seg_map_path']),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')], **kwargs)
    assert len(ds) == ade_demo['num_train']
    seg = ds[0]['data_samples'].gt_sem_seg.data.numpy()
    values = set(np.unique(seg).tolist())
    assert 255 in values  # unlabelled 0 -> ignore
    if classes is None:
        expected = {v - 1 for v in ADE_DEMO_LABEL_VALUES.values()} | {255}
    else:
        expected = set(range(len(classes))) | {255}
    assert values <= expected and len(values) >= 3


def test_deterministic_and_idempotent(tmp_path):
    a = make_coco_demo(tmp_path / 'a', num_train=3, num_val=1, img_size=96, seed=3)
    b = make_coco_demo(tmp_path / 'b', num_train=3, num_val=1, img_size=96, seed=3)
    c = make_coco_demo(tmp_path / 'c', num_train=3, num_val=1, img_size=96, seed=4)
    assert _digest(a['data_root']) == _digest(b['data_root']) != _digest(c['data_root'])
    ade1 = make_ade_demo(tmp_path / 'd', num_train=2, num_val=1, img_size=96, seed=1)
    ade2 = make_ade_demo(tmp_path / 'e', num_train=2, num_val=1, img_size=96, seed=1)
    assert _digest(ade1['data_root']) == _digest(ade2['data_root'])

    # same parameters again: nothing is rewritten
    ann = osp.join(a['data_root'], a['train_ann_file'])
    mtime = os.stat(ann).st_mtime_ns
    make_coco_demo(tmp_path / 'a', num_train=3, num_val=1, img_size=96, seed=3)
    assert os.stat(ann).st_mtime_ns == mtime
    # other parameters: regenerated, with no stale files left behind
    make_ade_demo(tmp_path / 'd', num_train=1, num_val=1, img_size=96, seed=1)
    assert len(os.listdir(osp.join(ade1['data_root'], 'images', 'training'))) == 1


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train' / 'precious.jpg').write_bytes(b'x')
    with pytest.raises(FileExistsError):
        make_coco_demo(tmp_path, num_train=1, num_val=1, img_size=64)
    assert (tmp_path / 'train' / 'precious.jpg').exists()
