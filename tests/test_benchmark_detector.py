"""Whole-detector benchmark (mmext/benchmark/detector.py, tools/benchmark_detector.py): rows for
mmext's and mmdet's configs in one run, units checked against things we control or know."""
import os.path as osp
import statistics
import subprocess
import sys
import time

import pytest
import torch

from mmext.benchmark.detector import (DetectorPart, build_detector, run_detector_benchmark,
                                      write_detector_results)
from mmext.errors import ConfigError

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO_ROOT, 'tools', 'benchmark_detector.py')
MMEXT_CFG = osp.join(REPO_ROOT, 'configs', 'rtmdet',
                     'efficientformerv2_s0_rtmdet_tiny_4xb32-100e_coco.py')
MMDET_CFG = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
TINY = (64, 64)


@pytest.fixture(scope='module')
def tiny_rows():
    return run_detector_benchmark([MMEXT_CFG, MMDET_CFG], TINY, warmup=1, iters=3, rounds=2,
                                  progress=lambda msg: None)


def _row(rows, config, part, mode):
    (row,) = [r for r in rows if r['config'] == config and r['part'] == part
              and r['mode'] == mode]
    return row


@pytest.mark.slow  # the shared tiny run takes ~10 s
def test_rows_of_mmext_and_mmdet_configs(tiny_rows):
    assert len(tiny_rows) == 8
    for part in ('network', 'predict'):
        for mode in ('eager', 'deploy'):
            row = _row(tiny_rows, MMEXT_CFG, part, mode)
            assert row['status'] == 'ok' and row['source'] == 'mmext'
            assert row['backbone'] == 'EfficientFormerV2-s0' and row['detector'] == 'RTMDet'
            assert row['min_ms'] <= row['median_ms'] <= row['max_ms']
            assert len(row['times_ms']) == 6 and row['rounds'] == 2
            assert row['input_size'] == '64x64' and row['threads'] == 1
        # mmdet's backbone has nothing to fuse: eager only, and the rows say so
        eager = _row(tiny_rows, MMDET_CFG, part, 'eager')
        assert eager['status'] == 'ok' and eager['source'] == 'mmdet'
        deploy = _row(tiny_rows, MMDET_CFG, part, 'deploy')
        assert deploy['status'] == 'skipped' and 'median_ms' not in deploy
        assert 'switch_to_deploy' in deploy['note'] and eager['note'] == deploy['note']
    for config in (MMEXT_CFG, MMDET_CFG):
        model, _ = build_detector(config)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for row in [r for r in tiny_rows if r['config'] == config]:
            assert row['params_m'] == pytest.approx(params, abs=1e-3)
            assert row['gflops'] > 0
        assert isinstance(_row(tiny_rows, config, 'predict', 'eager')['detections'], int)


@pytest.mark.slow
def test_times_are_milliseconds_of_the_network(tiny_rows):
    """The network row's median against the same network timed here with perf_counter."""
    model, _ = build_detector(MMDET_CFG)
    part = DetectorPart(model, 'network', TINY).eval()
    x = torch.rand(1, 3, *TINY)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        with torch.inference_mode():
            part(x)
            for _ in range(5):
                start = time.perf_counter()
                part(x)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(old)
    ratio = _row(tiny_rows, MMDET_CFG, 'network', 'eager')['median_ms'] / statistics.median(times)
    assert 0.33 < ratio < 3.0, ratio


def test_gflops_and_params_match_mmdet_for_rtmdet_tiny():
    """Upstream mmdetection's RTMDet model zoo (its configs/rtmdet/README.md) gives RTMDet-tiny
    4.8 M params and 8.1 GFLOPs at 640x640; mmengine's analyzer (one multiply-accumulate = one
    flop) counts 4.87 M and 8.03 G, within 3% of it."""
    rows = run_detector_benchmark([MMDET_CFG], (640, 640), warmup=0, iters=1, rounds=1,
                                  progress=lambda msg: None)
    row = _row(rows, MMDET_CFG, 'network', 'eager')
    assert row['params_m'] == pytest.approx(4.87, abs=0.05)
    assert row['gflops'] == pytest.approx(8.03, rel=0.03)


@pytest.mark.slow
def test_write_json_and_markdown(tiny_rows, tmp_path):
    json_path, md_path = write_detector_results(tiny_rows, str(tmp_path / 'det.json'),
                                                dict(shape='64x64'))
    import json
    with open(json_path) as f:
        data = json.load(f)
    assert data['rows'] == json.loads(json.dumps(tiny_rows, default=str))
    assert data['meta']['shape'] == '64x64' and data['meta']['torch'] == torch.__version__
    with open(md_path) as f:
        table = f.read()
    assert table.count('| RTMDet |') == 8 and 'median ms' in table


@pytest.mark.slow  # builds two detectors
def test_bf16_mode_rows(monkeypatch):
    """--modes bf16: backbone (fused) and neck in bf16, heads float32, for mmext's and mmdet's
    configs; a skipped row that says why on a machine without native bf16."""
    from mmext.benchmark import detector
    from mmext.deploy.runners import native_bf16
    if not native_bf16():
        rows = run_detector_benchmark([MMEXT_CFG], TINY, warmup=0, iters=1, rounds=1,
                                      progress=lambda msg: None, modes=['bf16'])
        assert all(r['status'].startswith('skipped: no native bf16') for r in rows)
        return
    built = []
    real_prepare = detector.prepare_config

    def prepare(*args, **kwargs):
        cases = real_prepare(*args, **kwargs)
        built.append(cases)
        return cases
    monkeypatch.setattr(detector, 'prepare_config', prepare)
    rows = run_detector_benchmark([MMEXT_CFG, MMDET_CFG], TINY, warmup=0, iters=1, rounds=1,
                                  progress=lambda msg: None, modes=['deploy', 'bf16'])
    assert len(rows) == 8
    for config in (MMEXT_CFG, MMDET_CFG):
        for part in ('network', 'predict'):
            row = _row(rows, config, part, 'bf16')
            assert row['status'] == 'ok' and row['median_ms'] > 0
            assert 'backbone and neck in bf16' in row['note']
    assert 'not fused' in _row(rows, MMDET_CFG, 'network', 'bf16')['note']
    # the timed module really holds bf16 copies of backbone and neck, float32 heads
    from mmext.engine.precision import Bf16Module
    (runner,) = [r for row, r in built[0] if row['mode'] == 'bf16' and row['part'] == 'network']
    module = runner.run.__defaults__[0].model
    assert isinstance(module.backbone, Bf16Module) and isinstance(module.neck, Bf16Module)
    assert next(module.backbone.parameters()).dtype == torch.bfloat16
    assert next(module.bbox_head.parameters()).dtype == torch.float32
    with pytest.raises(ConfigError, match='unknown detector mode'):
        run_detector_benchmark([MMEXT_CFG], TINY, modes=['fp8'], progress=lambda msg: None)


@pytest.mark.parametrize('configs,shape,match', [
    ([osp.join(REPO_ROOT, 'configs', 'semfpn', 'shvit_s1_fpn_40k_ade20k.py')], (64, 64),
     'not a detector config'),
    (['mmdet::_base_/datasets/coco_detection.py'], (64, 64), 'not a detector config'),
    (['mmdet::rtmdet/rtmdet_nano_8xb32-300e_coco.py'], (64, 64), 'has no config'),
    (['configs/rtmdet/missing.py'], (64, 64), 'does not exist'),
    ([MMDET_CFG], (97, 131), 'multiples of 32, e.g. 128 160'),
    ([MMDET_CFG], (0, 64), 'two positive integers'),
    ([], (64, 64), 'at least one config'),
])
def test_bad_input_is_one_clear_error(configs, shape, match):
    with pytest.raises(ConfigError, match=match):
        run_detector_benchmark(configs, shape, warmup=0, iters=1, rounds=1,
                               progress=lambda msg: None)


@pytest.mark.slow  # a subprocess importing mmdet
def test_cli_error_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, MMDET_CFG, '--shape', '97', '131', '--out',
                           str(tmp_path / 'x.json')], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'error:' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'x.json').exists()
