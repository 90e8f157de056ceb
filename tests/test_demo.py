"""The demo (tools/demo.py, mmext.apis.run_demo) for every detector type: its CPU overrides
applied to the real configs (plain small-image pipelines, hooks fitted to the short run, no
downloads), argument errors as one ``error:`` line, and short end-to-end runs that print the
AP and latency lines (subprocess) and return the metrics (from Python)."""
import os.path as osp
import re
import subprocess
import sys

import pytest

from mmext.apis.demo import (DEMO_SETTINGS, DETECTORS, ap_line, backbone_name,
                             demo_cfg_options, detector_of)
from mmext.engine.config import load_config, register_codebase
from mmext.errors import ConfigError

from .runtime_helpers import REPO_ROOT, config_path

DEMO = osp.join(REPO_ROOT, 'tools', 'demo.py')
CONFIGS = {
    'MaskRCNN': 'mask_rcnn/shvit_s4_fpn_1x_coco.py',
    'RetinaNet': 'retinanet/efficientformerv2_s0_fpn_1x_coco.py',
    'RTMDet': 'rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py',
    'YOLOX': 'yolox/efficientformerv2_s0_yolox_tiny_8xb8-100e_coco.py',
}
# Transforms of the recipes' heavy pipelines that a CPU demo must not run.
HEAVY = ('Mosaic', 'CachedMosaic', 'MixUp', 'CachedMixUp', 'RandomAffine', 'RandomResize',
         'RandomCrop', 'Pad', 'YOLOXHSVRandomAug')
AP_LINE = re.compile(r'^mmext demo: bbox AP = (\d\.\d{3})(   segm AP = (\d\.\d{3}))?$', re.M)
LATENCY_LINE = re.compile(r'^mmext demo: (\S+) backbone CPU latency \(fused, 1 thread, '
                          r'input 1x3x224x224\): (\d+\.\d) ms$', re.M)


def demo_cfg(det_type, data, **settings):
    register_codebase('mmdet')
    cfg = load_config(config_path(CONFIGS[det_type]))
    opts = dict(DEMO_SETTINGS, **DETECTORS[det_type]['settings'])
    opts.update(settings)
    cfg.merge_from_dict(demo_cfg_options(cfg, data, opts, '/tmp/unused'))
    return cfg


@pytest.mark.parametrize('det_type', sorted(CONFIGS))
def test_overrides_give_small_plain_images_and_short_run_hooks(det_type, coco_demo):
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    cfg = demo_cfg(det_type, coco_demo, img_size=64, max_epochs=3, batch_size=2)
    assert detector_of(cfg)[0] == det_type
    assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.norm_eval is False
    heads = [cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head] \
        if det_type == 'MaskRCNN' else [cfg.model.bbox_head]
    assert all(h.num_classes == 3 for h in heads)
    assert cfg.train_cfg.max_epochs == 3 and not cfg.train_cfg.get('dynamic_intervals')
    assert cfg.train_dataloader.batch_size == 2
    assert not cfg.model.data_preprocessor.get('batch_augments')
    hooks = {h['type']: h for h in cfg.get('custom_hooks', [])}
    assert not {'PipelineSwitchHook', 'YOLOXModeSwitchHook'} & set(hooks)
    if 'EMAHook' in hooks:  # 3 epochs x (4 images // 2) = 6 iterations: EMA over ~1/20 of it
        assert hooks['EMAHook']['momentum'] == 0.5 and hooks['EMAHook']['gamma'] == 1
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        assert dataset.type == 'CocoDataset'
        assert dataset.data_root == coco_demo['data_root']
        assert not heavy_types(dataset.pipeline)
        # a real sample through the real pipeline: the 128 px image resized to 64 px
        with DefaultScope.overwrite_default_scope('mmdet'):  # as the runner's default_scope
            sample = DATASETS.build(dataset)[0]
        assert tuple(sample['inputs'].shape[-2:]) == (64, 64), loader
        assert len(sample['data_samples'].gt_instances) > 0
    assert cfg.val_evaluator.metric == (['bbox', 'segm'] if det_type == 'MaskRCNN' else ['bbox'])


def heavy_types(pipeline):
    return [t['type'] for t in pipeline if t['type'] in HEAVY]


def test_ap_line_and_backbone_name():
    metrics = {'coco/bbox_mAP': 0.523, 'coco/segm_mAP': 0.25, 'coco/bbox_mAP_50': 0.9}
    assert ap_line(metrics, with_segm=True) == \
        'mmext demo: bbox AP = 0.523   segm AP = 0.250'
    assert ap_line(metrics, with_segm=False) == 'mmext demo: bbox AP = 0.523'
    assert backbone_name(dict(type='mmext.SHViT', arch='s4')) == 'SHViT-S4'
    assert backbone_name(dict(type='EfficientFormerV2', arch='s0')) == 'EfficientFormerV2-S0'


def test_not_a_detection_config_is_refused():
    register_codebase('mmdet')
    cfg = load_config(config_path('semfpn/shvit_s1_fpn_40k_ade20k.py'))
    with pytest.raises(ConfigError, match='mmseg config'):
        detector_of(cfg)


def run_demo_cli(args, env, timeout=600):
    proc = subprocess.run([sys.executable, DEMO, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


BAD_ARGS = [
    (['--epochs', '0'], 'max_epochs (--epochs) must be a positive integer, got 0.'),
    (['--epochs', '-2', '--config', config_path(CONFIGS['RTMDet'])],
     'max_epochs (--epochs) must be a positive integer, got -2.'),
    (['--batch-size', '0'], 'batch_size (--batch-size) must be a positive integer, got 0.'),
    (['--lr', '-1'], 'lr (--lr) must be a positive number, got -1.0.'),
    (['--config', config_path('semfpn/shvit_s1_fpn_40k_ade20k.py')], 'an mmseg config'),
    (['--config', 'configs/none.py'], "config file 'configs/none.py' does not exist"),
]


def check_one_error_line(stderr, message):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
        stderr[-3000:]


@pytest.mark.parametrize('args, message', BAD_ARGS)
def test_bad_arguments_give_one_error_line(args, message, tmp_path, capsys):
    """tools/demo.py's main through run_cli, in this process: exit 2, one line, no data."""
    import runpy
    demo = runpy.run_path(DEMO, run_name='mmext_demo_tool')
    with pytest.raises(SystemExit) as info:
        demo['run_cli'](demo['main'], [*args, '--work-dir', str(tmp_path / 'w'),
                                       '--data-root', str(tmp_path / 'data')])
    assert info.value.code == 2
    out = capsys.readouterr()
    assert out.out == ''
    check_one_error_line(out.err, message)
    assert not (tmp_path / 'data').exists()  # refused before any data is written


@pytest.mark.slow
def test_epochs_zero_exits_2_with_one_line(tmp_path, subprocess_env):
    """The same, as a user runs it (it was a traceback)."""
    proc = run_demo_cli(['--epochs', '0', '--work-dir', str(tmp_path / 'w'),
                         '--data-root', str(tmp_path / 'data')], subprocess_env)
    assert proc.returncode == 2 and proc.stdout == '', proc.output[-3000:]
    check_one_error_line(proc.stderr, 'max_epochs (--epochs) must be a positive integer, got 0.')


def check_demo_output(output, with_segm, backbone):
    ap = AP_LINE.findall(output)
    assert len(ap) == 1, output[-4000:]
    assert bool(ap[0][1]) == with_segm
    # the headline repeats the bbox (and segm) mAP of the metrics block printed above it
    block = dict(re.findall(r'^\s+(coco/\w+)\s+(\d\.\d{4})$', output, re.M))
    assert abs(float(ap[0][0]) - float(block['coco/bbox_mAP'])) <= 5e-4
    if with_segm:
        assert abs(float(ap[0][2]) - float(block['coco/segm_mAP'])) <= 5e-4
    latency = LATENCY_LINE.findall(output)
    assert len(latency) == 1 and latency[0][0] == backbone, output[-4000:]
    assert float(latency[0][1]) > 0


def check_run_config(work_dir, config, img_size):
    """The config the runner dumped into ``work_dir`` (what really ran) has the demo's small
    plain pipelines, not the recipe's 640-800 px ones."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(work_dir, osp.basename(config)))
    for loader in ('train_dataloader', 'val_dataloader'):
        pipeline = cfg[loader].dataset.pipeline
        assert not heavy_types(pipeline), pipeline
        resize = [t for t in pipeline if t['type'] == 'Resize']
        assert len(resize) == 1 and list(resize[0]['scale']) == [img_size, img_size]
    assert not cfg.model.data_preprocessor.get('batch_augments')
    assert cfg.model.backbone.init_cfg is None


TINY = ['--epochs', '1', '--num-train', '4', '--num-val', '2', '--batch-size', '2',
        '--img-size', '64']


@pytest.mark.slow
@pytest.mark.parametrize('det_type, backbone', [('MaskRCNN', 'SHViT-S4'),
                                                ('RTMDet', 'SHViT-S1')])
def test_demo_cli_end_to_end(det_type, backbone, tmp_path, subprocess_env):
    config = [] if det_type == 'MaskRCNN' else ['--config', config_path(CONFIGS[det_type])]
    proc = run_demo_cli([*config, *TINY, '--work-dir', str(tmp_path / 'work'),
                         '--data-root', str(tmp_path / 'data')], subprocess_env)
    assert proc.returncode == 0, proc.output[-6000:]
    check_demo_output(proc.stdout, det_type == 'MaskRCNN', backbone)
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
    check_run_config(str(tmp_path / 'work'), CONFIGS[det_type], 64)


@pytest.mark.slow
def test_run_demo_from_python_returns_the_metrics(tmp_path, capsys):
    import torch
    from mmext.apis import run_demo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses: 2 threads on a loaded machine crawl
    try:
        # after 2 iterations no score passes YOLOX's threshold; 0 keeps every box (CocoMetric
        # then computes every metric) and checks that cfg_options reach the run
        result = run_demo(work_dir=str(tmp_path / 'work'), data_root=str(tmp_path / 'data'),
                          config=config_path(CONFIGS['YOLOX']), max_epochs=1, num_train=4,
                          num_val=2, batch_size=2, img_size=64,
                          cfg_options={'model.test_cfg.score_thr': 0.0})
    finally:
        torch.set_num_threads(threads)
    metrics = result['metrics']
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_50'} <= set(metrics)
    assert result['bbox_mAP'] == metrics['coco/bbox_mAP'] and result['segm_mAP'] is None
    assert result['detector'] == 'YOLOX' and result['backbone'] == 'EfficientFormerV2-S0'
    assert result['latency_ms'] > 0 and result['settings']['img_size'] == 64
    check_demo_output(capsys.readouterr().out, False, 'EfficientFormerV2-S0')
    check_run_config(result['work_dir'], CONFIGS['YOLOX'], 64)
