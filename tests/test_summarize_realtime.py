"""Results summary of RTMDet/YOLOX runs against whole-detector latency.

A real RTMDet work dir (tools/test.py in a subprocess, mmengine's Runner, the generated COCO set,
a randomly initialised checkpoint of the config's own model) and a real detector benchmark JSON
(mmext.benchmark.detector at 64x64) of that config, another mmext RTMDet config and mmdet's
RTMDet-tiny; summarize must join the run to its own config's row (network part, deploy mode by
default) and write the detector columns and the plot."""
import csv
import json
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from mmext.analysis import detector_latency as det_lat
from mmext.analysis import summarize as summ
from mmext.analysis.naming import identify_from_path
from mmext.analysis.plot import plot_panels, x_key
from mmext.errors import ConfigError

from .runtime_helpers import config_path, write_config
from .test_realtime_train import run_overrides
from .test_tools import TEST, check_ok, run
from .test_tools_deploy import load_tool, user_error

CONFIG = 'shvit_s1_rtmdet_tiny_4xb32-100e_coco'
OTHER = 'efficientformerv2_s0_rtmdet_tiny_4xb32-100e_coco'
MMDET_TINY = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'


@pytest.fixture(scope='module')
def realtime(tmp_path_factory, coco_demo, subprocess_env):
    from mmext.benchmark.detector import (build_detector, run_detector_benchmark,
                                          write_detector_results)
    root = tmp_path_factory.mktemp('summary_realtime')
    source = config_path(f'rtmdet/{CONFIG}.py')
    overrides = run_overrides(Config.fromfile(source), 'rtmdet', coco_demo)
    overrides.update({'model.backbone.init_cfg': None,
                      'model.bbox_head.num_classes': len(coco_demo['classes']),
                      'model.test_cfg.score_thr': 0.0, 'model.test_cfg.min_bbox_size': -1})
    (root / 'cfg').mkdir()
    # the run's config keeps the real config's file name: that name is the join key
    run_cfg = write_config(root / 'cfg' / f'{CONFIG}.py', source, overrides)
    model, _ = build_detector(run_cfg)
    ckpt = str(root / 'random_init.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    # a work dir whose name says neither the task nor the config: both come from the run
    work_dir = root / 'work_dirs' / 'realtime' / 'run_a'
    check_ok(run([sys.executable, TEST, run_cfg, ckpt, '--work-dir', str(work_dir)],
                 subprocess_env, timeout=300))
    rows = run_detector_benchmark([source, config_path(f'rtmdet/{OTHER}.py'), MMDET_TINY],
                                  shape=(64, 64), warmup=0, iters=1, rounds=1,
                                  progress=lambda *a: None)
    det_json, _ = write_detector_results(rows, str(root / 'bench' / 'detectors.json'))
    return dict(root=root, work_dirs=str(root / 'work_dirs'), det_json=det_json, rows=rows)


def bench_value(rows, config, part, mode):
    [row] = [r for r in rows if det_lat.config_key(r['config']) == config and
             r['part'] == part and r['mode'] == mode]
    return row


@pytest.mark.slow
def test_rtmdet_run_recognised(realtime):
    [run_row] = summ.collect_runs(realtime['work_dirs'])
    assert (run_row['task'], run_row['backbone'], run_row['model']) == (
        'RTMDet', 'shvit_s1', 'SHViT-S1')
    assert (run_row['config'], run_row['dataset'], run_row['split']) == (CONFIG, 'COCO', 'test')
    assert run_row['bbox_mAP'] >= 0.0


@pytest.mark.slow
def test_summary_joins_the_runs_own_config(realtime):
    out = realtime['root'] / 'out'
    result = summ.summarize(work_dirs=realtime['work_dirs'], benchmark=realtime['det_json'],
                            out_dir=str(out))
    assert result['warnings'] == []
    rows = realtime['rows']
    deploy = bench_value(rows, CONFIG, 'network', 'deploy')
    eager = bench_value(rows, CONFIG, 'network', 'eager')
    other = bench_value(rows, OTHER, 'network', 'deploy')
    assert len({deploy['median_ms'], eager['median_ms'], other['median_ms']}) == 3
    with open(result['csv']) as f:
        table = list(csv.DictReader(f))
    for column in ('detector_ms', 'detector_gflops', 'detector_setting', 'config'):
        assert column in table[0]
    [measured] = [r for r in table if r['source'] == 'measured']
    assert measured['task'] == 'RTMDet' and measured['config'] == CONFIG
    assert float(measured['detector_ms']) == pytest.approx(deploy['median_ms'])
    assert float(measured['detector_gflops']) == pytest.approx(deploy['gflops'])
    assert measured['detector_setting'].endswith('64x64, 1 thread, network, deploy')
    # mmdet's RTMDet-tiny: a reference row, timed eager (its backbone has nothing to fuse)
    tiny = [r for r in table if r['model'] == 'RTMDet-tiny']
    assert [r['source'] for r in tiny] == ['mmdet'] and tiny[0]['bbox_mAP'] == '40.9'
    mmdet_eager = bench_value(rows, 'rtmdet_tiny_8xb32-300e_coco', 'network', 'eager')
    assert float(tiny[0]['detector_ms']) == pytest.approx(mmdet_eager['median_ms'])
    assert tiny[0]['detector_setting'].endswith('network, eager')
    md = open(result['markdown']).read()
    assert 'detector latency (ms)' in md and f'| {CONFIG} |' in md
    assert open(result['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    panels = plot_panels(result['rows'])
    assert ('RTMDet', 'bbox_mAP', 'detector_ms') in panels
    # mmdet's YOLOX rows alone, not timed: nothing to draw, no panel
    assert not [p for p in panels if p[0] == 'YOLOX']


@pytest.mark.slow
def test_predict_part_and_both_benchmark_kinds(realtime, capsys):
    from mmext.benchmark import run_benchmark, write_results
    backbone_json = str(realtime['root'] / 'bench' / 'backbone.json')
    write_results(run_benchmark(archs='shvit_s1', protocols='cpu_latency_seg', modes='deploy',
                                tiny=True, compare_timm=False, reference=False,
                                progress=False), backbone_json)
    out = realtime['root'] / 'cli'
    load_tool('summarize_results').main([
        '--work-dirs', realtime['work_dirs'], '--benchmark', backbone_json,
        realtime['det_json'], '--detector-part', 'predict', '--out', str(out)])
    assert 'RTMDet' in capsys.readouterr().out
    with open(out / 'summary.csv') as f:
        [measured] = [r for r in csv.DictReader(f) if r['source'] == 'measured']
    predict = bench_value(realtime['rows'], CONFIG, 'predict', 'deploy')
    assert float(measured['detector_ms']) == pytest.approx(predict['median_ms'])
    assert measured['latency_ms'] and 'cpu_latency_seg' in measured['latency_setting']


def det_row(config, median_ms, part='network', mode='deploy', status='ok'):
    return dict(config=config, part=part, mode=mode, median_ms=median_ms, status=status,
                device_name='test cpu', input_size='640x640', threads=1, gflops=1.5)


def test_detector_latency_table_picks_part_and_mode():
    rows = [det_row(f'configs/rtmdet/{CONFIG}.py', 30.0, mode='eager'),
            det_row(f'configs/rtmdet/{CONFIG}.py', 20.0),
            det_row(f'configs/rtmdet/{CONFIG}.py', 50.0, part='predict'),
            det_row(f'configs/rtmdet/{OTHER}.py', 40.0),
            det_row(MMDET_TINY, None, status='failed: RuntimeError: x'),
            det_row(MMDET_TINY, 25.0, mode='eager'),
            det_row(MMDET_TINY, None, status='skipped')]
    table = det_lat.detector_latency_table(rows)
    assert table[CONFIG]['detector_ms'] == 20.0 and table[OTHER]['detector_ms'] == 40.0
    assert table['rtmdet_tiny_8xb32-300e_coco']['detector_ms'] == 25.0
    assert table[CONFIG]['detector_setting'] == 'test cpu, 640x640, 1 thread, network, deploy'
    assert det_lat.detector_latency_table(rows, 'predict')[CONFIG]['detector_ms'] == 50.0
    assert det_lat.detector_latency_table(rows, mode='eager')[CONFIG]['detector_ms'] == 30.0
    runs = [dict(source='measured', model='SHViT-S1', task='RTMDet', config=CONFIG,
                 bbox_mAP=30.0),
            dict(source='measured', model='EfficientFormerV2-S0', task='YOLOX', config='yolox_x',
                 bbox_mAP=25.0)]
    built = summ.build_rows(runs, detector_rows=rows, include_paper=False)
    assert [r.get('detector_ms') for r in built] == [20.0, None]
    with pytest.raises(ConfigError, match='--detector-part'):
        det_lat.detector_latency_table(rows, 'forward')
    with pytest.raises(ConfigError, match='--detector-mode'):
        det_lat.detector_latency_table(rows, mode='fp16')


def test_realtime_tasks_from_path_and_plot_axis():
    info = identify_from_path(osp.join('work_dirs', 'rtmdet', 'shvit_s1_rtmdet_tiny_4xb32'))
    assert info == dict(backbone='shvit_s1', task='RTMDet')
    info = identify_from_path(osp.join('work_dirs', 'shvit_s2_yolox_s_8xb8-100e_coco'))
    assert info == dict(backbone='shvit_s2', task='YOLOX', dataset='COCO')
    rows = [dict(source='measured', task='YOLOX', bbox_mAP=30.0, latency_ms=2.0),
            dict(source='measured', task='RetinaNet', bbox_mAP=30.0, latency_ms=2.0,
                 detector_ms=9.0)]
    assert x_key(rows, 'YOLOX') == 'latency_ms'  # no detector latency: the backbone's
    assert x_key(rows, 'RetinaNet') == 'latency_ms'
    rows[0]['detector_ms'] = 10.0
    assert x_key(rows, 'YOLOX') == 'detector_ms'


def test_plot_with_detector_panels(tmp_path):
    rows = summ.build_rows(
        [dict(source='measured', model='SHViT-S1', task='YOLOX', config='a', bbox_mAP=30.0),
         dict(source='measured', model='SHViT-S2', task='YOLOX', config='b', bbox_mAP=33.0)],
        detector_rows=[det_row('a.py', 10.0), det_row('b.py', 12.0),
                       det_row(f'mmdet::yolox/{summ.MMDET_RESULTS[2]["config"]}.py', 11.0,
                               mode='eager')])
    assert [r['detector_ms'] for r in rows if r['task'] == 'YOLOX' and
            r.get('detector_ms')] == [10.0, 12.0, 11.0]
    assert plot_panels(rows)[-1] == ('YOLOX', 'bbox_mAP', 'detector_ms')
    path = summ.plot(rows, str(tmp_path / 'p.png'))
    import matplotlib.image
    assert matplotlib.image.imread(path).shape[0] > 100


def test_mmdet_reference_rows_match_mmdets_metafiles():
    import mmdet
    import yaml
    root = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
    for ref in summ.MMDET_RESULTS:
        folder = ref['task'].lower()
        with open(osp.join(root, folder, 'metafile.yml')) as f:
            models = yaml.safe_load(f)['Models']
        [model] = [m for m in models
                   if osp.basename(m['Config']) == ref['config'] + '.py']
        [box_ap] = [r['Metrics']['box AP'] for r in model['Results']]
        assert box_ap == ref['bbox_mAP'], ref


def test_bad_detector_json_and_choice(tmp_path, capsys):
    (tmp_path / 'work_dirs').mkdir()
    bench = tmp_path / 'det.json'
    bench.write_text(json.dumps({'rows': [dict(config='a.py', part='network')]}))
    args = ['--work-dirs', str(tmp_path / 'work_dirs'), '--allow-empty', '--out',
            str(tmp_path / 'out')]
    err = user_error(capsys, 'summarize_results', args + ['--benchmark', str(bench)])
    assert 'det.json' in err and 'lacks mode, status' in err
    err = user_error(capsys, 'summarize_results', args + ['--detector-part', 'nms'])
    assert '--detector-part must be one of network, predict' in err
