"""``make demo``: Mask R-CNN with an SHViT-S4 backbone, trained and evaluated on CPU in minutes.

No download is needed: the data is the generated shapes set of :mod:`mmext.demo`, and the
backbone starts from random weights (no ImageNet checkpoint offline). The model comes from
``configs/mask_rcnn/shvit_s4_fpn_1x_coco.py`` (SHViT-S4 + TransConvFPN + Mask R-CNN heads); only
what a CPU demo needs is overridden: the data (3 classes, 128x128 images), a short schedule with
a higher lr and gradient clipping, the batch size, BatchNorm statistics learned (no pretrained
ones), and narrower RoI heads with fewer sampled RoIs (the mask head would otherwise dominate a
CPU step; see :func:`demo_cfg_options`).

Tuning (2 CPU cores): 5 epochs of 24 iterations (batch 4) take about 300 CPU-seconds and reach
bbox AP ~0.35-0.45 and segm AP ~0.5-0.6 on the 24 validation images; after 2 epochs AP is
already ~0.1.
"""
import os.path as osp
import time

from mmext.engine.config import load_config, register_codebase
from mmext.engine.datasets import check_datasets
from mmext.engine.hooks import MetricsRecorder
from mmext.engine.launch import adapt_to_device, build_runner
from mmext.engine.metrics import format_metrics
from mmext.resources import config_path
from mmext.utils import unwrap_model

DEMO_CONFIG = 'configs/mask_rcnn/shvit_s4_fpn_1x_coco.py'

#: Generated data and schedule; tuned so the demo learns (AP well above 0) in a few minutes
#: on 2 CPU cores.
DEMO_SETTINGS = dict(
    num_train=96,
    num_val=24,
    img_size=128,
    max_epochs=5,
    batch_size=4,
    lr=1e-3,
    head_channels=128,
    mask_convs=2,
    rcnn_samples=32,
    val_interval=None,
    seed=0,
)


def demo_cfg_options(data, img_size, max_epochs, batch_size, lr, seed, work_dir,
                     head_channels=None, mask_convs=None, rcnn_samples=None,
                     val_interval=None):
    """The overrides applied to the Mask R-CNN config, as a ``--cfg-options`` dict.

    On a CPU the RoI mask head dominates the cost, so the demo narrows the neck and heads to
    ``head_channels`` (256 in the config), uses ``mask_convs`` convs in the mask head (4) and
    samples ``rcnn_samples`` RoIs per image (512); the backbone and neck types are unchanged.
    """
    scale = (img_size, img_size)
    num_classes = len(data['classes'])
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]

    def dataset(split, pipeline, test_mode):
        return dict(
            data_root=data['data_root'],
            metainfo=data['metainfo'],
            ann_file=data[f'{split}_ann_file'],
            data_prefix=dict(img=data[f'{split}_img_prefix']),
            pipeline=pipeline,
            test_mode=test_mode)

    val_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dataset('val', test_pipeline, True))
    evaluator = dict(type='CocoMetric', metric=['bbox', 'segm'],
                     ann_file=osp.join(data['data_root'], data['val_ann_file']))
    iters_per_epoch = max(1, data['num_train'] // batch_size)
    opts = {
        'work_dir': work_dir,
        'randomness': dict(seed=seed, deterministic=False),
        # No ImageNet weights offline: random init, and BatchNorm learns its statistics.
        'model.backbone.init_cfg': None,
        'model.backbone.norm_eval': False,
        'model.roi_head.bbox_head.num_classes': num_classes,
        'model.roi_head.mask_head.num_classes': num_classes,
        'train_dataloader': dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                                 dataset=dataset('train', train_pipeline, False)),
        'val_dataloader': val_loader,
        'test_dataloader': val_loader,
        'val_evaluator': evaluator,
        'test_evaluator': evaluator,
        'train_cfg': dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                          val_interval=val_interval or max_epochs),
        # at most 3 shapes per image: fewer proposals and detections make testing cheap
        'model.test_cfg.rpn.max_per_img': 300,
        'model.test_cfg.rcnn.max_per_img': 20,
        'optim_wrapper.optimizer.lr': lr,
        'optim_wrapper.clip_grad': dict(max_norm=10.0, norm_type=2),
        'param_scheduler': [
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
                 end=min(50, iters_per_epoch * max_epochs // 4)),
            dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
                 milestones=[max(1, int(0.75 * max_epochs + 0.5))], gamma=0.1),
        ],
        'default_hooks.logger.interval': 10,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=max_epochs,
                                         max_keep_ckpts=1),
        'log_processor.window_size': 10,
    }
    if head_channels:
        c = int(head_channels)
        opts.update({
            'model.neck.out_channels': c,
            'model.rpn_head.in_channels': c,
            'model.rpn_head.feat_channels': c,
            'model.roi_head.bbox_roi_extractor.out_channels': c,
            'model.roi_head.bbox_head.in_channels': c,
            'model.roi_head.bbox_head.fc_out_channels': 4 * c,
            'model.roi_head.mask_roi_extractor.out_channels': c,
            'model.roi_head.mask_head.in_channels': c,
            'model.roi_head.mask_head.conv_out_channels': c,
        })
    if mask_convs:
        opts['model.roi_head.mask_head.num_convs'] = int(mask_convs)
    if rcnn_samples:
        opts['model.train_cfg.rcnn.sampler.num'] = int(rcnn_samples)
    return opts


def run_demo(work_dir='work_dirs/demo', data_root='data/demo/coco', config=None,
             latency_input=(1, 3, 224, 224), **settings):
    """Generate the demo data, train Mask R-CNN + SHViT-S4 on it, evaluate it, time the backbone.

    ``settings`` override :data:`DEMO_SETTINGS`. Returns a dict with the metrics, the latency in
    milliseconds, the paths written and the wall time.
    """
    from mmext.demo import make_coco_demo
    from mmext.benchmark.timing import measure_latency

    opts = dict(DEMO_SETTINGS, **settings)
    start = time.time()
    # the checkout's configs/ or, from an installed wheel, mmext/.mim/configs
    config = config or config_path(DEMO_CONFIG)
    data = make_coco_demo(data_root, num_train=opts['num_train'], num_val=opts['num_val'],
                          img_size=opts['img_size'], seed=opts['seed'])
    data['num_train'] = opts['num_train']
    print(f'mmext demo: data set of {opts["num_train"]} training and {opts["num_val"]} '
          f'validation images ({opts["img_size"]}x{opts["img_size"]}, classes '
          f'{", ".join(data["classes"])}) in {data["data_root"]}', flush=True)

    register_codebase('mmdet')
    cfg = load_config(config, demo_cfg_options(
        data, opts['img_size'], opts['max_epochs'], opts['batch_size'], opts['lr'],
        opts['seed'], osp.abspath(work_dir), opts['head_channels'], opts['mask_convs'],
        opts['rcnn_samples'], opts['val_interval']))
    adapt_to_device(cfg, 'none')
    check_datasets(cfg, ['train', 'val'])
    runner = build_runner(cfg)
    recorder = MetricsRecorder()
    runner.register_hook(recorder)
    print(f'mmext demo: training Mask R-CNN + SHViT-S4 from scratch for {opts["max_epochs"]} '
          f'epochs on CPU, neck and heads narrowed to {opts["head_channels"]} channels '
          f'(logs and checkpoint in {cfg.work_dir})', flush=True)
    runner.train()
    metrics = recorder.metrics
    train_time = time.time() - start

    model = unwrap_model(runner.model)
    latency_ms = measure_latency(model.backbone, tuple(latency_input), warmup=2, iters=10)
    shape = 'x'.join(str(s) for s in latency_input)
    bbox = metrics.get('coco/bbox_mAP', float('nan'))
    segm = metrics.get('coco/segm_mAP', float('nan'))
    print('', flush=True)
    print(format_metrics({k: v for k, v in metrics.items() if k.startswith('coco/')},
                         'mmext demo: COCO metrics on the validation images'))
    print(f'mmext demo: bbox AP = {bbox:.3f}   segm AP = {segm:.3f}')
    print(f'mmext demo: SHViT-S4 backbone CPU latency (fused, 1 thread, input {shape}): '
          f'{latency_ms:.1f} ms')
    print(f'mmext demo: outputs: data {data["data_root"]}, logs and checkpoint '
          f'{osp.abspath(cfg.work_dir)} ({time.time() - start:.0f} s in all, '
          f'{train_time:.0f} s data + training)', flush=True)
    return dict(metrics=metrics, bbox_mAP=bbox, segm_mAP=segm, latency_ms=latency_ms,
                data_root=data['data_root'], work_dir=osp.abspath(cfg.work_dir),
                seconds=time.time() - start)
