"""Plain helpers for the runtime/tool tests: tiny run settings and derived config files.

A derived config inherits a real config of the repository (``_base_`` = its absolute path)
and overrides only what a seconds-long CPU run on the generated data needs.
"""
import os.path as osp

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def config_path(rel):
    return osp.join(REPO_ROOT, 'configs', rel)


def nest(dotted):
    """``{'a.b': 1, 'c': {...}}`` -> ``{'a': {'b': 1}, 'c': {...}}`` (deep-merged)."""
    out = {}
    for key, value in dotted.items():
        node, parts = out, key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def write_config(path, base, overrides):
    """Write a config file at ``path`` inheriting ``base`` with ``overrides`` (dotted keys ok)."""
    lines = [f'_base_ = {str(base)!r}', '']
    for key, value in nest(overrides).items():
        lines.append(f'{key} = {value!r}')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


# Neck/head width of the tool tests (256 in the configs): the tools, not the heads, are under
# test, and narrow heads keep the steps and the checkpoints (with AdamW state) small.
TEST_WIDTH = 64


def det_overrides(data, kind='mask_rcnn', max_epochs=1, batch_size=2, val_interval=None,
                  width=TEST_WIDTH):
    """Tiny detection run on the demo COCO set; ``kind`` is 'mask_rcnn' or 'retinanet'.

    ``width``: neck and head channels (None keeps the config's).
    """
    with_mask = kind == 'mask_rcnn'
    scale = (data['img_size'], data['img_size'])
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]

    def dataset(split, pipeline, test_mode):
        return dict(data_root=data['data_root'], metainfo=data['metainfo'],
                    ann_file=data[f'{split}_ann_file'],
                    data_prefix=dict(img=data[f'{split}_img_prefix']),
                    pipeline=pipeline, test_mode=test_mode)

    loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                  dataset=dataset('val', test_pipeline, True))
    evaluator = dict(type='CocoMetric', metric=['bbox', 'segm'] if with_mask else ['bbox'],
                     ann_file=osp.join(data['data_root'], data['val_ann_file']))
    num_classes = len(data['classes'])
    opts = {
        'model.backbone.init_cfg': None,
        'train_dataloader': dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                                 dataset=dataset('train', train_pipeline, False)),
        'val_dataloader': loader,
        'test_dataloader': loader,
        'val_evaluator': evaluator,
        'test_evaluator': evaluator,
        'train_cfg': dict(max_epochs=max_epochs,
                          val_interval=val_interval or max_epochs + 100),
        'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                                 end=1)],
        'default_hooks': dict(logger=dict(interval=1),
                              checkpoint=dict(type='CheckpointHook', interval=1)),
        'log_processor': dict(window_size=1),
    }
    if kind == 'mask_rcnn':
        opts.update({
            'model.roi_head.bbox_head.num_classes': num_classes,
            'model.roi_head.mask_head.num_classes': num_classes,
            # fewer sampled RoIs: the mask head dominates a CPU step
            'model.train_cfg.rcnn.sampler.num': 64,
        })
        if width:
            opts.update({
                'model.neck.out_channels': width,
                'model.rpn_head.in_channels': width,
                'model.rpn_head.feat_channels': width,
                'model.roi_head.bbox_roi_extractor.out_channels': width,
                'model.roi_head.bbox_head.in_channels': width,
                'model.roi_head.bbox_head.fc_out_channels': 4 * width,
                'model.roi_head.mask_roi_extractor.out_channels': width,
                'model.roi_head.mask_head.in_channels': width,
                'model.roi_head.mask_head.conv_out_channels': width,
            })
    else:
        opts['model.bbox_head.num_classes'] = num_classes
        # an all-but-untrained RetinaNet scores below the default 0.05 everywhere, and
        # CocoMetric reports nothing for an empty result
        opts['model.test_cfg.score_thr'] = 0.0
        if width:
            opts.update({
                'model.neck.out_channels': width,
                'model.bbox_head.in_channels': width,
                'model.bbox_head.feat_channels': width,
            })
    return opts


def seg_overrides(data, max_iters=4, batch_size=2, checkpoint_interval=None,
                  width=TEST_WIDTH):
    """Tiny Semantic FPN run on the demo ADE20K set (4 classes through mmseg's label_map)."""
    size = data['img_size']
    crop = (size, size)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(2 * size, size), ratio_range=(0.75, 1.25),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2 * size, size), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]

    def dataset(split, pipeline):
        return dict(data_root=data['data_root'], metainfo=data['metainfo'],
                    data_prefix=dict(img_path=data[f'{split}_img_path'],
                                     seg_map_path=data[f'{split}_seg_map_path']),
                    pipeline=pipeline)

    loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                  dataset=dataset('val', test_pipeline))
    opts = {
        'crop_size': crop,
        'model.data_preprocessor.size': crop,
        'model.backbone.init_cfg': None,
        'model.decode_head.num_classes': len(data['classes']),
        'train_dataloader': dict(batch_size=batch_size, num_workers=0,
                                 persistent_workers=False,
                                 dataset=dataset('train', train_pipeline)),
        'val_dataloader': loader,
        'test_dataloader': loader,
        'train_cfg': dict(max_iters=max_iters, val_interval=max_iters + 100),
        'param_scheduler': [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0,
                                 end=max_iters, by_epoch=False)],
        'default_hooks': dict(logger=dict(interval=1),
                              checkpoint=dict(by_epoch=False,
                                              interval=checkpoint_interval or max_iters)),
    }
    if width:
        opts.update({
            'model.neck.out_channels': width,
            'model.decode_head.in_channels': [width] * 4,
            'model.decode_head.channels': width // 2,
        })
    return opts


# ------------------------------------------------------------------ tiny runs for the run tests
TINY_SIZE = 96


def tiny_retinanet_config(path, data, max_epochs=2, config='retinanet/shvit_s1_fpn_1x_coco.py',
                          random_aug=True, width=32, **extra):
    """A RetinaNet config on the demo COCO set at 96 px, 32-channel neck/head; with
    ``random_aug`` its training pipeline draws random numbers (flip, photometric distortion)
    from NumPy's global generator, so a run depends on the generator states."""
    opts = det_overrides(dict(data, img_size=TINY_SIZE), 'retinanet', max_epochs=max_epochs,
                         width=width)
    if random_aug:
        scale = (TINY_SIZE, TINY_SIZE)
        opts['train_dataloader']['dataset']['pipeline'] = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=scale, keep_ratio=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PhotoMetricDistortion'),
            dict(type='PackDetInputs'),
        ]
    opts.update(extra)
    return write_config(path, config_path(config), opts)


def build_config_model(config_file, cfg_options=None):
    """The detector/segmentor a config file describes (random init, on the CPU)."""
    from mmext.engine.config import detect_codebase, load_config, register_codebase
    from mmext.engine.launch import adapt_to_device
    cfg = load_config(config_file, cfg_options)
    codebase = detect_codebase(cfg)
    register_codebase(codebase)
    adapt_to_device(cfg)
    registry = __import__(f'{codebase}.registry', fromlist=['MODELS']).MODELS
    return registry.build(cfg.model)


def save_training_checkpoint(path, model, epoch=1, iters=2):
    """An mmengine-style training checkpoint of ``model`` (meta + state_dict) at ``path``."""
    import torch
    torch.save(dict(meta=dict(epoch=epoch, iter=iters, seed=0),
                    state_dict={k: v.detach().clone() for k, v in model.state_dict().items()}),
               str(path))
    return str(path)
