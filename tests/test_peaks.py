"""GEMM peaks and per-row efficiency: the peaks are measured and land in the meta; a row's
GFLOP/s is 2 x MACs x batch / time and its peak fraction is over the peak of its precision."""
import pytest
import torch

from mmext.analysis import count_macs
from mmext.benchmark import backbone as bb
from mmext.benchmark import peaks as pk
from mmext.benchmark.models import build_mmext
from mmext.benchmark.protocols import ARCHS
from mmext.deploy.runners import module_version, native_bf16


def test_gflops_formula():
    # 1 GMAC per image, batch 2, 1 s: 2 FLOP per MAC -> 4 GFLOP/s
    assert pk.gflops_per_s(1e9, 2, 1000.0) == pytest.approx(4.0)
    assert pk.gflops_per_s(None, 2, 1000.0) is None
    assert pk.gflops_per_s(1e9, 2, 0) is None


def test_mode_precision():
    assert pk.mode_precision('deploy') == 'fp32'
    assert pk.mode_precision('onnxruntime') == 'fp32'
    assert pk.mode_precision('bf16') == 'bf16'
    assert pk.mode_precision('openvino_bf16') == 'bf16'
    assert pk.mode_precision('onnxruntime_int8') == 'int8'
    assert pk.mode_precision('deploy', amp=True) == 'fp16'


def test_measure_peaks_small():
    peaks = pk.measure_peaks('cpu', threads=1, n=256, repeats=1)
    assert peaks['threads'] == 1 and peaks['n'] == 256
    assert peaks['fp32'] > 0.1
    if native_bf16('cpu'):
        assert peaks['bf16'] > 0.1
    else:
        assert peaks['bf16'] is None and 'bf16' in peaks['notes']
    if module_version('onnxruntime') and module_version('onnx'):
        assert peaks['int8'] > 0.1
    else:
        assert peaks['int8'] is None and 'int8' in peaks['notes']


def test_matmul_peak_tracks_work():
    # the figure is work / time: a 4x larger n^3 must not read as 4x faster than the machine is
    small = pk.matmul_peak(torch.float32, n=128, repeats=2)
    big = pk.matmul_peak(torch.float32, n=512, repeats=2)
    assert 0.05 < big / small < 50


def test_run_benchmark_rows_and_meta():
    meta = {}
    rows = bb.run_benchmark(archs='shvit_s1', protocols='cpu_throughput',
                            modes=['deploy', 'onnxruntime_int8'], tiny=True, compare_timm=False,
                            reference=False, progress=False, peak_n=256, meta=meta, rounds=1,
                            calib=dict(num=2))
    assert set(meta['peaks']) == {'cpu:1'}
    peak = meta['peaks']['cpu:1']
    assert peak['fp32'] > 0
    model = build_mmext(ARCHS['shvit_s1'])
    macs = count_macs(model, (1, 3, 64, 64))
    by_mode = {r['mode']: r for r in rows}
    for mode, row in by_mode.items():
        if row['status'] != 'ok':
            assert row['status'].startswith('skipped'), row['status']
            continue
        assert row['macs'] == macs
        expect = 2 * macs * row['batch'] / (row['median_ms'] / 1000) / 1e9
        assert row['gflops_s'] == pytest.approx(expect, abs=0.006)  # stored to 2 decimals
        precision = pk.mode_precision(mode)
        assert row['precision'] == precision
        # the peak is the GEMM of the row's precision timed in the same rounds
        same = meta['peaks_same_rounds'][0]
        assert same['arch'] == 'shvit_s1' and same['n'] == 256
        assert row['peak_source'] == 'same rounds'
        assert row['peak_gflops_s'] == same[precision]
        assert row['peak_fraction'] == pytest.approx(expect / same[precision], rel=1e-3,
                                                     abs=1e-4)
    assert by_mode['deploy']['status'] == 'ok'
    if by_mode['onnxruntime_int8']['status'] == 'ok':
        row = by_mode['onnxruntime_int8']
        assert len(row['cosine']) == 3 and row['cosine_min'] == min(row['cosine'])
        assert row['calib_images'] == 2


def test_no_peaks_leaves_fraction_empty():
    meta = {}
    rows = bb.run_benchmark(archs='shvit_s1', protocols='cpu_throughput', modes=['deploy'],
                            tiny=True, compare_timm=False, reference=False, progress=False,
                            peaks=False, meta=meta, check=False)
    assert 'peaks' not in meta
    assert rows[0]['gflops_s'] > 0 and rows[0]['peak_fraction'] is None
