"""``make demo``: train and evaluate a detector with an mmext backbone on CPU, in minutes.

No download is needed: the data is the generated shapes set of :mod:`mmext.demo`, and the
backbone starts from random weights (no ImageNet checkpoint offline). By default the model is
``configs/mask_rcnn/shvit_s4_fpn_1x_coco.py`` (SHViT-S4 + TransConvFPN + Mask R-CNN heads); any
mmext detection config works (``mask_rcnn/``, ``retinanet/``, ``rtmdet/``, ``yolox/``). The
config's model is kept; only what a CPU demo needs is overridden (see :func:`demo_cfg_options`):
the data (3 classes, small square images, a plain resize/flip pipeline: no Mosaic, MixUp or
random affine, no multi-scale batch resizing), a short schedule with a higher lr, the batch
size, BatchNorm statistics learned and no backbone checkpoint, the EMA hook's horizon scaled to
the short run, and the final-pipeline switch hooks dropped (the demo pipeline is already the
plain one). What differs per detector type is the small table :data:`DETECTORS`.

Tuning (Mask R-CNN, 2 CPU cores): 5 epochs of 24 iterations (batch 4) take about 300
CPU-seconds and reach bbox AP ~0.35-0.45 and segm AP ~0.5-0.6 on the 24 validation images.
RTMDet/YOLOX: 36 epochs of 12 iterations (batch 8, 128 px, 100-220 CPU-seconds). Measured
bbox AP: EfficientFormerV2-S0 RTMDet 0.77-0.79, YOLOX 0.86; SHViT-S1 RTMDet 0.48-0.73 across
seeds and thread counts with ``stride8='stem'``, 0.70-0.71 with ``'upsample'``.
"""
import os.path as osp
import time

from mmext.apis.checks import checked
from mmext.apis.training import save_checkpoints_atomically
from mmext.checkpoints.files import writable_folder
from mmext.compat import weights_only_checkpoints
from mmext.engine.config import detect_codebase, load_config, register_codebase
from mmext.engine.datasets import check_datasets
from mmext.engine.hooks import MetricsRecorder
from mmext.engine.launch import adapt_to_device, build_runner
from mmext.engine.metrics import format_metrics
from mmext.engine.workdir_lock import WorkDirLock
from mmext.errors import ConfigError
from mmext.resources import config_path
from mmext.utils import unwrap_model

DEMO_CONFIG = 'configs/mask_rcnn/shvit_s4_fpn_1x_coco.py'

#: Generated data and schedule shared by every detector (each entry of :data:`DETECTORS` may
#: change some); tuned so the demo learns (AP well above 0) in a few minutes on 2 CPU cores.
DEMO_SETTINGS = dict(
    num_train=96,
    num_val=24,
    img_size=128,
    max_epochs=5,
    batch_size=4,
    lr=1e-3,
    val_interval=None,
    seed=0,
)

_CLIP = dict(max_norm=10.0, norm_type=2)
_MASK_RCNN_WIDTH = 128  # neck and heads (256 in the config): the RoI heads dominate a CPU step

#: Per detector type (``model.type``): its name, what it is evaluated on, the settings that
#: differ from :data:`DEMO_SETTINGS`, the keys holding the class count, the lr schedule after
#: the warm-up ('step': x0.1 at 3/4; 'cosine': down to 0.05x), and config overrides.
DETECTORS = {
    'MaskRCNN': dict(
        name='Mask R-CNN', metrics=('bbox', 'segm'), settings={}, schedule='step',
        num_classes=('model.roi_head.bbox_head.num_classes',
                     'model.roi_head.mask_head.num_classes'),
        overrides={
            'model.neck.out_channels': _MASK_RCNN_WIDTH,
            'model.rpn_head.in_channels': _MASK_RCNN_WIDTH,
            'model.rpn_head.feat_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.bbox_roi_extractor.out_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.bbox_head.in_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.bbox_head.fc_out_channels': 4 * _MASK_RCNN_WIDTH,
            'model.roi_head.mask_roi_extractor.out_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.mask_head.in_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.mask_head.conv_out_channels': _MASK_RCNN_WIDTH,
            'model.roi_head.mask_head.num_convs': 2,
            'model.train_cfg.rcnn.sampler.num': 32,  # RoIs sampled per image (512)
            # at most 3 shapes per image: fewer proposals and detections make testing cheap
            'model.test_cfg.rpn.max_per_img': 300,
            'model.test_cfg.rcnn.max_per_img': 20,
            'optim_wrapper.clip_grad': _CLIP,
        }),
    'RetinaNet': dict(
        name='RetinaNet', metrics=('bbox',), settings=dict(max_epochs=12),
        schedule='step', num_classes=('model.bbox_head.num_classes',),
        overrides={'model.test_cfg.max_per_img': 20, 'optim_wrapper.clip_grad': _CLIP}),
    'RTMDet': dict(
        name='RTMDet', metrics=('bbox',),
        settings=dict(max_epochs=36, batch_size=8, lr=2e-3),
        schedule='cosine', num_classes=('model.bbox_head.num_classes',),
        overrides={'model.test_cfg.max_per_img': 20, 'optim_wrapper.clip_grad': _CLIP}),
    'YOLOX': dict(
        name='YOLOX', metrics=('bbox',),
        settings=dict(max_epochs=36, batch_size=8, lr=2e-3),
        schedule='cosine', num_classes=('model.bbox_head.num_classes',),
        overrides={'model.test_cfg.max_per_img': 20, 'optim_wrapper.clip_grad': _CLIP,
                   'model.test_cfg.score_thr': 0.001,  # as RTMDet's (YOLOX: 0.01)
                   # YOLOX's multi-scale batch resizing works at 480-800 px: off
                   'model.data_preprocessor.batch_augments': None}),
}

#: Hooks that switch from the Mosaic/MixUp pipeline to the final one: the demo trains on the
#: plain pipeline from the start, so they go (YOLOX's would call a method that only its
#: MultiImageMixDataset has).
_DROPPED_HOOKS = ('PipelineSwitchHook', 'YOLOXModeSwitchHook')


def detector_of(cfg):
    """``(model type, DETECTORS entry)`` of a detection config; a clear error otherwise."""
    codebase = detect_codebase(cfg)
    model_type = str((cfg.get('model') or {}).get('type', '')).split('.')[-1]
    if codebase != 'mmdet' or model_type not in DETECTORS:
        what = f'an {codebase} config' if codebase != 'mmdet' else f'a {model_type} model'
        raise ConfigError(
            f'the demo trains detectors ({", ".join(DETECTORS)}; configs under '
            f'configs/mask_rcnn, retinanet, rtmdet, yolox), but this is {what}.')
    return model_type, DETECTORS[model_type]


def check_settings(settings):
    """Positive sizes and counts, a positive lr: a :class:`ConfigError` naming the bad one."""
    flags = dict(max_epochs='--epochs', batch_size='--batch-size', img_size='--img-size',
                 num_train='--num-train', num_val='--num-val', lr='--lr')
    for key, flag in flags.items():
        value = settings[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key != 'lr' and not isinstance(value, int):
            number = False
        if not number or value <= 0:
            kind = 'a positive number' if key == 'lr' else 'a positive integer'
            raise ConfigError(f'{key} ({flag}) must be {kind}, got {value!r}.')
    if settings['img_size'] < 32:
        raise ConfigError(f'img_size (--img-size) must be at least 32, got '
                          f'{settings["img_size"]}.')
    interval = settings.get('val_interval')
    if interval is not None and (not isinstance(interval, int) or interval <= 0):
        raise ConfigError(f'val_interval must be a positive integer, got {interval!r}.')


def _pipelines(img_size, with_mask):
    scale = (img_size, img_size)
    load = dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)
    train = [dict(type='LoadImageFromFile'), load,
             dict(type='Resize', scale=scale, keep_ratio=True),
             dict(type='RandomFlip', prob=0.5),
             dict(type='PackDetInputs')]
    test = [dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=scale, keep_ratio=True), load,
            dict(type='PackDetInputs',
                 meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
    return train, test


def _hooks(custom_hooks, total_iters):
    """The config's custom hooks for a run of ``total_iters`` iterations: the pipeline
    switches dropped, the EMA's horizon about 1/20 of the run (its 2000-iteration warm-up
    scaled to 1/10), instead of the recipes' momentum for 100 epochs of COCO."""
    hooks = []
    for hook in custom_hooks or []:
        hook = dict(hook)
        if hook.get('type') in _DROPPED_HOOKS:
            continue
        if hook.get('type') == 'EMAHook':
            hook['momentum'] = min(0.5, max(hook.get('momentum', 2e-4), 20.0 / total_iters))
            if hook.get('ema_type') == 'ExpMomentumEMA':
                hook['gamma'] = max(1, total_iters // 10)
        hooks.append(hook)
    return hooks


def demo_cfg_options(cfg, data, settings, work_dir):
    """The overrides for ``cfg`` (a detection config), as a ``--cfg-options`` dict."""
    _, det = detector_of(cfg)
    epochs, batch_size = settings['max_epochs'], settings['batch_size']
    train_pipeline, test_pipeline = _pipelines(settings['img_size'], 'segm' in det['metrics'])

    def dataset(split, pipeline, test_mode):
        return dict(
            _delete_=True,  # YOLOX's train set is a MultiImageMixDataset: replaced
            type='CocoDataset',
            data_root=data['data_root'],
            metainfo=data['metainfo'],
            ann_file=data[f'{split}_ann_file'],
            data_prefix=dict(img=data[f'{split}_img_prefix']),
            pipeline=pipeline,
            test_mode=test_mode)

    def val_loader():  # one dict each: merging pops '_delete_' from the dict it merges
        return dict(batch_size=1, num_workers=0, persistent_workers=False,
                    dataset=dataset('val', test_pipeline, True))

    evaluator = dict(type='CocoMetric', metric=list(det['metrics']),
                     ann_file=osp.join(data['data_root'], data['val_ann_file']))
    iters_per_epoch = max(1, data['num_train'] // batch_size)
    total_iters = iters_per_epoch * epochs
    warmup = dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
                  end=max(1, min(50, total_iters // 4)))
    if det['schedule'] == 'cosine':
        decay = dict(type='CosineAnnealingLR', eta_min=settings['lr'] * 0.05, begin=0,
                     end=epochs, T_max=epochs, by_epoch=True, convert_to_iter_based=True)
    else:
        decay = dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True,
                     milestones=[max(1, int(0.75 * epochs + 0.5))], gamma=0.1)
    opts = {
        'work_dir': work_dir,
        'randomness': dict(seed=settings['seed'], deterministic=False),
        # No ImageNet weights offline: random init, and BatchNorm learns its statistics.
        'model.backbone.init_cfg': None,
        'model.backbone.norm_eval': False,
        'train_dataloader': dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                                 dataset=dataset('train', train_pipeline, False)),
        'val_dataloader': val_loader(),
        'test_dataloader': val_loader(),
        'val_evaluator': evaluator,
        'test_evaluator': evaluator,
        'train_cfg': dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=epochs,
                          val_interval=settings['val_interval'] or epochs),
        'optim_wrapper.optimizer.lr': settings['lr'],
        'param_scheduler': [warmup, decay],
        'custom_hooks': _hooks(cfg.get('custom_hooks'), total_iters),
        'default_hooks.logger.interval': 10,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=epochs,
                                         max_keep_ckpts=1),
        'log_processor.window_size': 10,
    }
    opts.update({key: len(data['classes']) for key in det['num_classes']})
    opts.update(det['overrides'])
    return opts


def ap_line(metrics, with_segm):
    """``mmext demo: bbox AP = 0.523   segm AP = 0.601`` from CocoMetric's results."""
    line = f'mmext demo: bbox AP = {metrics.get("coco/bbox_mAP", float("nan")):.3f}'
    if with_segm:
        line += f'   segm AP = {metrics.get("coco/segm_mAP", float("nan")):.3f}'
    return line


def backbone_name(backbone_cfg):
    """``'SHViT-S4'`` from ``dict(type='mmext.SHViT', arch='s4')``."""
    name = str(backbone_cfg.get('type', 'backbone')).split('.')[-1]
    arch = backbone_cfg.get('arch')
    return f'{name}-{arch.upper()}' if isinstance(arch, str) else name


@checked(work_dir='path', data_root='path', config='config', latency_input='shape',
         cfg_options='dict')
def run_demo(work_dir='work_dirs/demo', data_root='data/demo/coco', config=None,
             latency_input=(1, 3, 224, 224), cfg_options=None, **settings):
    """Generate the demo data, train the detector of ``config`` (default: Mask R-CNN +
    SHViT-S4) on it, evaluate it, time its backbone.

    ``settings`` override :data:`DEMO_SETTINGS` and the detector's own settings;
    ``cfg_options`` (dotted keys) are merged last. Returns a dict with the metrics, bbox/segm
    AP, the latency in milliseconds, the paths written and the wall/CPU time.
    """
    from mmext.demo import make_coco_demo
    from mmext.benchmark.timing import measure_latency

    start, cpu_start = time.time(), time.process_time()
    # the checkout's configs/ or, from an installed wheel, mmext/.mim/configs
    config = config or config_path(DEMO_CONFIG)
    register_codebase('mmdet')
    cfg = load_config(config)
    model_type, det = detector_of(cfg)
    unknown = set(settings) - set(DEMO_SETTINGS)
    if unknown:
        raise ConfigError(f'unknown demo settings {sorted(unknown)}; known: '
                          f'{sorted(DEMO_SETTINGS)}.')
    opts = dict(DEMO_SETTINGS, **det['settings'])
    opts.update({k: v for k, v in settings.items() if v is not None})
    check_settings(opts)
    work_dir = osp.abspath(str((cfg_options or {}).get('work_dir', work_dir)))
    # one run per work dir, as training holds it (see mmext.engine.workdir_lock)
    with WorkDirLock(work_dir) as lock:
        if lock.note:
            print(lock.note, flush=True)
        writable_folder(data_root, 'data folder (--data-root)')
        try:
            data = make_coco_demo(data_root, num_train=opts['num_train'],
                                  num_val=opts['num_val'], img_size=opts['img_size'],
                                  seed=opts['seed'])
        except FileExistsError as exc:
            raise ConfigError(f'{exc} (--data-root).') from None
        data['num_train'] = opts['num_train']
        print(f'mmext demo: data set of {opts["num_train"]} training and {opts["num_val"]} '
              f'validation images ({opts["img_size"]}x{opts["img_size"]}, classes '
              f'{", ".join(data["classes"])}) in {data["data_root"]}', flush=True)

        cfg.merge_from_dict(demo_cfg_options(cfg, data, opts, work_dir))
        if cfg_options:
            cfg.merge_from_dict(dict(cfg_options))
        adapt_to_device(cfg, 'none')
        check_datasets(cfg, ['train', 'val'])
        runner = build_runner(cfg)
        recorder = MetricsRecorder()
        runner.register_hook(recorder)
        backbone = backbone_name(cfg.model.backbone)
        print(f'mmext demo: training {det["name"]} + {backbone} from scratch for '
              f'{opts["max_epochs"]} epochs (batch {opts["batch_size"]}, lr {opts["lr"]:g}) on '
              f'CPU (logs and checkpoint in {cfg.work_dir})', flush=True)
        save_checkpoints_atomically(runner)
        with weights_only_checkpoints():
            runner.train()
    metrics = recorder.metrics
    train_time = time.time() - start
    train_cpu = time.process_time() - cpu_start

    model = unwrap_model(runner.model)
    latency_ms = measure_latency(model.backbone, tuple(latency_input), warmup=2, iters=10)
    shape = 'x'.join(str(s) for s in latency_input)
    print('', flush=True)
    if not metrics:  # CocoMetric gives no metrics at all when nothing passed score_thr
        print('mmext demo: no detection scored above the test score threshold: AP 0 '
              '(train longer)')
        metrics = {f'coco/{m}_mAP': 0.0 for m in det['metrics']}
    bbox = metrics.get('coco/bbox_mAP', float('nan'))
    print(format_metrics({k: v for k, v in metrics.items() if k.startswith('coco/')},
                         'mmext demo: COCO metrics on the validation images'))
    segm = metrics.get('coco/segm_mAP', float('nan')) if 'segm' in det['metrics'] else None
    print(ap_line(metrics, with_segm=segm is not None))
    print(f'mmext demo: {backbone} backbone CPU latency (fused, 1 thread, input {shape}): '
          f'{latency_ms:.1f} ms')
    print(f'mmext demo: outputs: data {data["data_root"]}, logs and checkpoint '
          f'{osp.abspath(cfg.work_dir)} ({time.time() - start:.0f} s in all, '
          f'{train_time:.0f} s data + training, {train_cpu:.0f} CPU-s)', flush=True)
    return dict(metrics=metrics, bbox_mAP=bbox, segm_mAP=segm, latency_ms=latency_ms,
                detector=model_type, backbone=backbone, settings=opts,
                data_root=data['data_root'], work_dir=osp.abspath(cfg.work_dir),
                seconds=time.time() - start, train_seconds=train_time,
                train_cpu_seconds=train_cpu)
