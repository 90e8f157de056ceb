"""RTMDet and YOLOX with mmext backbones, trained and tested through tools/train.py and
tools/test.py (subprocesses, mmengine's runner) on the generated COCO set.

The run config inherits the real config and shrinks only sizes: the pipelines are the config's
own (Mosaic, MixUp, random resize/affine, ...) with every image size scaled from 640 to the
data's 128, the hooks are the config's own (EMA, the final pipeline switch) with the switch
moved to epoch 1 of 2, so that both pipelines, the switch and the EMA run for real."""
import os.path as osp
import re
import sys

import pytest
import torch
from mmext.compat import load_weights_only
from mmengine.config import Config

from .runtime_helpers import config_path, write_config
from .test_tools import TEST, TRAIN, check_ok, run

CASES = {
    'rtmdet': 'rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py',
    'yolox': 'yolox/efficientformerv2_s0_yolox_tiny_8xb8-100e_coco.py',
}
# Size keys of mmdet's transforms and batch augments; their values scale with the image.
SIZE_KEYS = ('img_scale', 'scale', 'crop_size', 'size', 'border', 'random_size_range')


def shrink(obj, factor):
    """``obj`` (pipeline, hooks) with every image size under SIZE_KEYS times ``factor``."""
    if isinstance(obj, dict):
        return {k: (_scaled(v, factor) if k in SIZE_KEYS else shrink(v, factor))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(shrink(v, factor) for v in obj)
    return obj


def _scaled(value, factor):
    if isinstance(value, (list, tuple)):
        return type(value)(int(round(v * factor)) for v in value)
    return int(round(value * factor))


def plain(obj):
    """ConfigDicts/tuples as plain dicts/lists/tuples (for the derived config file)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def run_overrides(cfg, det, data, switch_epoch=1):
    factor = data['img_size'] / 640
    root = data['data_root']

    def coco(split, pipeline, test_mode):
        return dict(data_root=root, metainfo=data['metainfo'],
                    ann_file=data[f'{split}_ann_file'],
                    data_prefix=dict(img=data[f'{split}_img_prefix']),
                    pipeline=pipeline, test_mode=test_mode)

    train_set = cfg.train_dataloader.dataset
    if det == 'yolox':  # MultiImageMixDataset: loading inside, Mosaic/MixUp outside
        train_set = dict(dataset=coco('train', plain(train_set.dataset.pipeline), False),
                         pipeline=shrink(plain(train_set.pipeline), factor))
    else:
        train_set = coco('train', shrink(plain(train_set.pipeline), factor), False)
    test_set = coco('val', shrink(plain(cfg.test_dataloader.dataset.pipeline), factor), True)
    loader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=test_set)
    evaluator = dict(type='CocoMetric', metric='bbox',
                     ann_file=osp.join(root, data['val_ann_file']))
    hooks = shrink(plain(cfg.custom_hooks), factor)
    for hook in hooks:
        if hook['type'] == 'PipelineSwitchHook':
            hook['switch_epoch'] = switch_epoch
        if hook['type'] == 'YOLOXModeSwitchHook':
            hook['num_last_epochs'] = 2 - switch_epoch
    return {
        'train_dataloader': dict(batch_size=2, num_workers=0, persistent_workers=False,
                                 dataset=train_set),
        'val_dataloader': loader,
        'test_dataloader': loader,
        'val_evaluator': evaluator,
        'test_evaluator': evaluator,
        'custom_hooks': hooks,
        'model.data_preprocessor': shrink(plain(cfg.model.data_preprocessor), factor),
        # the last epoch's checkpoint only (the one tested): one 86 MB write less per run
        'default_hooks': dict(logger=dict(interval=1),
                              checkpoint=dict(type='CheckpointHook', interval=2)),
        'log_processor': dict(window_size=1),
    }


# CPU-sized settings on the command line: 2 epochs of 2 iterations (4 images, batch 2),
# no download, the generated set's classes, and every box kept: an all-but-untrained head
# scores below the configs' thresholds and regresses boxes of zero height (RTMDet's
# min_bbox_size=0 drops those), and CocoMetric reports nothing for an empty result.
def cli_options(data):
    return ['--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=100',
            'model.backbone.init_cfg=None', f'model.bbox_head.num_classes={len(data["classes"])}',
            'model.test_cfg.score_thr=0.0', 'model.test_cfg.min_bbox_size=-1']


@pytest.mark.slow
@pytest.mark.parametrize('det', sorted(CASES))
def test_train_then_test(det, tmp_path, coco_demo, subprocess_env):
    source = config_path(CASES[det])
    cfg = Config.fromfile(source)
    run_cfg = write_config(tmp_path / f'{det}_tiny.py', source,
                           run_overrides(cfg, det, coco_demo))
    work_dir = str(tmp_path / 'work')
    out = check_ok(run([sys.executable, TRAIN, run_cfg, '--work-dir', work_dir] +
                       cli_options(coco_demo), subprocess_env))
    # the final-pipeline switch of the config ran at its (moved) epoch
    switched = {'rtmdet': 'Switch pipeline now!', 'yolox': 'No mosaic and mixup aug now!'}
    assert switched[det] in out
    ckpt_path = osp.join(work_dir, 'epoch_2.pth')
    # our own checkpoint, written a moment ago by mmengine
    ckpt = load_weights_only(ckpt_path, map_location='cpu')  # mmext's allow-list, any torch
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 2 * coco_demo['num_train'] // 2
    # the EMA of the config (ExpMomentumEMA) was kept, and the saved weights are its average
    assert 'ema_state_dict' in ckpt
    assert any(k.startswith('backbone.') for k in ckpt['state_dict'])

    out = check_ok(run([sys.executable, TEST, run_cfg, ckpt_path, '--work-dir', work_dir] +
                       cli_options(coco_demo), subprocess_env))
    assert 'coco/bbox_mAP' in out and 'mmext: test metrics' in out
    ap = float(re.search(r'coco/bbox_mAP:\s*([0-9.]+)', out).group(1))
    # --fuse with the config's EMA: the averaged weights are swapped in, then fused; same AP
    out = check_ok(run([sys.executable, TEST, run_cfg, ckpt_path, '--work-dir', work_dir,
                        '--fuse'] + cli_options(coco_demo), subprocess_env))
    assert 'mmext: fused the backbone' in out and 'EMA weights stay' in out
    assert abs(float(re.search(r'coco/bbox_mAP:\s*([0-9.]+)', out).group(1)) - ap) < 0.01


def test_shrink_scales_sizes_only():
    pipe = [dict(type='CachedMosaic', img_scale=(640, 640), pad_val=114.0),
            dict(type='RandomAffine', border=(-320, -320), scaling_ratio_range=(0.1, 2)),
            dict(type='Pad', size=(640, 640), pad_val=dict(img=(114, 114, 114)))]
    small = shrink(pipe, 0.2)
    assert small[0] == dict(type='CachedMosaic', img_scale=(128, 128), pad_val=114.0)
    assert small[1]['border'] == (-64, -64) and small[1]['scaling_ratio_range'] == (0.1, 2)
    assert small[2]['size'] == (128, 128) and small[2]['pad_val'] == dict(img=(114, 114, 114))
