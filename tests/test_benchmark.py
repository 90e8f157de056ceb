"""The backbone benchmark: a tiny CPU run of the function and of the CLI; runners that must run
the fused model; timing checked on a module whose run time is known (it sleeps)."""
import collections
import contextlib
import json
import os
import sys
import time

import pytest
import torch

from torch.nn.modules.batchnorm import _BatchNorm

from mmext import benchmark as bench
from mmext.benchmark.timing import time_cases
from mmext.deploy.runners import Runner
from mmext.models.families import FAMILIES
from mmext.models.layers import LayerScale
from tests.helpers import max_rel_error, randomize_norms
from tests.helpers import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROW_KEYS = ('arch', 'source', 'mode', 'protocol', 'device', 'device_name', 'torch', 'batch',
            'input_size', 'median_ms', 'min_ms', 'max_ms', 'img_per_s', 'status')


def check_row(row):
    for key in ROW_KEYS:
        assert key in row, key
    assert row['torch'] == torch.__version__
    assert row['device_name']
    if row['status'] == 'ok':
        assert 0 < row['min_ms'] <= row['median_ms'] <= row['max_ms']
        assert row['img_per_s'] > 0
    else:
        assert row['status'].startswith(('skipped: ', 'failed: '))
        assert row['median_ms'] is None


def test_run_benchmark_tiny_cpu():
    rows = bench.run_benchmark(archs='shvit_s1', protocols=['cpu_latency_seg', 'gpu_latency_seg'],
                               modes=['eager', 'deploy', 'cuda_graph'], tiny=True,
                               compare_timm=False, reference=False, progress=False)
    assert len(rows) == 6
    for row in rows:
        check_row(row)
        assert row['input_size'] == '64x64' and row['batch'] == 1
    cpu = {r['mode']: r for r in rows if r['protocol'] == 'cpu_latency_seg'}
    assert cpu['eager']['status'] == 'ok' and cpu['deploy']['status'] == 'ok'
    assert cpu['eager']['threads'] == 1 and cpu['eager']['iters'] == bench.TINY['iters']
    # against eager outputs: folding changes the rounding, so exactly 0 would mean deploy vs deploy
    assert 0 < cpu['deploy']['max_rel_err'] < 1e-4
    assert cpu['cuda_graph']['status'].startswith('skipped: ')
    gpu = [r for r in rows if r['protocol'] == 'gpu_latency_seg']
    if not torch.cuda.is_available():
        assert all(r['status'] == 'skipped: CUDA is not available on this machine' for r in gpu)
    # without timm there is nothing to compare with
    assert all(r['ratio_vs_timm'] is None for r in rows)


def test_deploy_mode_matches_eager():
    model = randomize_norms(bench.build_mmext(bench.ARCHS['shvit_s1']))
    x = torch.randn(2, 3, 64, 96)
    eager = bench.make_runner(model, 'eager', x).run()
    deploy = bench.make_runner(model, 'deploy', x).run()
    channels_last = bench.make_runner(model, 'channels_last', x).run()
    assert not getattr(model, 'deploy', False)  # the caller's model is left unfused
    assert max_rel_error(eager, deploy) < 1e-4
    assert max_rel_error(eager, channels_last) < 1e-4


@contextlib.contextmanager
def modules_called():
    """A Counter of the module classes whose forward runs inside the block (every module, via
    torch's global forward hook; ONNX export traces count too)."""
    called = collections.Counter()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: called.update([type(module)]))
    try:
        yield called
    finally:
        handle.remove()


def unfused(called):
    """Module classes a fused model never runs: BatchNorms and layer scales."""
    return sorted(c.__name__ for c in called if issubclass(c, (_BatchNorm, LayerScale)))


# The smallest arch of every family of the manifest (efficientformer_l1 also has layer scales and
# the pooling mixer).
FUSE_ARCHS = [f.model_name(f.smallest) for f in FAMILIES.values()]


@pytest.mark.parametrize('arch', FUSE_ARCHS)
def test_deploy_and_later_modes_run_the_fused_model(arch):
    """The eager runner runs BatchNorms (so the hook sees them); deploy and channels_last run
    none and give the eager outputs within 1e-5."""
    model = randomize_norms(bench.build_mmext(bench.ARCHS[arch]))
    x = torch.randn(2, 3, 64, 96)
    outs = {}
    for mode in ('eager', 'deploy', 'channels_last'):
        with modules_called() as called:
            runner = bench.make_runner(model, mode, x)
            outs[mode] = runner.run()
        runner.close()
        if mode == 'eager':
            assert any(issubclass(c, _BatchNorm) for c in called), 'no BatchNorm in eager?'
        else:
            assert unfused(called) == [], f'{mode} ran {unfused(called)}'
            assert max_rel_error(outs['eager'], outs[mode]) < 1e-5, mode


def test_onnxruntime_mode_exports_the_fused_model():
    pytest.importorskip('onnxruntime')
    model = randomize_norms(bench.build_mmext(bench.ARCHS['efficientformer_l1']))
    x = torch.randn(1, 3, 64, 96)
    eager = bench.make_runner(model, 'eager', x).run()
    with modules_called() as called:  # the export traces the model it hands to ONNX Runtime
        runner = bench.make_runner(model, 'onnxruntime', x)
    try:
        assert called and unfused(called) == [], unfused(called)
        assert max_rel_error(eager, runner.run()) < 1e-5
    finally:
        runner.close()


class SleepPerImage(torch.nn.Module):
    """Takes a known time: ``MS`` milliseconds per image of the batch."""
    MS = 20

    def forward(self, x):
        time.sleep(self.MS / 1000.0 * x.shape[0])
        return x[:, :1]


def test_times_are_milliseconds_per_batch_and_images_per_second():
    batch = 4
    runner = bench.make_runner(SleepPerImage(), 'eager', torch.zeros(batch, 3, 8, 8))
    row = dict(batch=batch, status='ok')
    settings = dict(threads=1, warmup=1, iters=3)
    time_cases([(row, runner)], bench.PROTOCOLS['cpu_latency_seg'], settings)
    want_ms = batch * SleepPerImage.MS  # 80 ms a batch, 50 images/s
    assert len(row['times_ms']) == 3
    # a loaded machine is slower, never faster, than the sleep
    assert want_ms <= row['min_ms'] <= row['median_ms'] < 3 * want_ms, row
    assert 1000.0 / SleepPerImage.MS / 3 < row['img_per_s'] <= 1000.0 / SleepPerImage.MS, row
    assert row['img_per_s'] == pytest.approx(batch * 1000.0 / row['median_ms'], rel=1e-3)
    assert 'rounds' in row and row['status'] == 'ok'


def test_rounds_take_turns():
    """Round r times case A then case B; warm-up runs only in the first round (then one)."""
    calls = []
    cases = [(dict(batch=1, status='ok'), Runner(lambda: calls.append('a'))),
             (dict(batch=1, status='ok'), Runner(lambda: calls.append('b')))]
    settings = dict(threads=1, warmup=2, iters=3)
    rows = time_cases(cases, bench.PROTOCOLS['cpu_latency_seg'], settings, rounds=2)
    assert ''.join(calls) == 'a' * 5 + 'b' * 5 + 'a' * 4 + 'b' * 4
    assert [len(r['times_ms']) for r in rows] == [6, 6]


def test_rounds_interleave_and_pool_the_modes():
    rows = bench.run_benchmark(archs='shvit_s1', protocols='cpu_latency_seg',
                               modes=['eager', 'deploy', 'cuda_graph'], tiny=True, rounds=2,
                               compare_timm=False, reference=False, progress=False)
    ok = [r for r in rows if r['status'] == 'ok']
    assert [r['mode'] for r in ok] == ['eager', 'deploy']
    for row in ok:
        check_row(row)
        assert row['rounds'] == 2 and row['iters'] == bench.TINY['iters']
        assert len(row['times_ms']) == 2 * bench.TINY['iters']
    assert rows[2]['status'].startswith('skipped: ') and 'rounds' not in rows[2]


def test_measure_latency_leaves_the_callers_model_alone():
    model = bench.build_mmext(bench.ARCHS['shvit_s1']).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ms = bench.measure_latency(model, (1, 3, 64, 64), warmup=1, iters=2)
    assert ms > 0 and torch.get_num_threads() == 1
    assert model.training and not getattr(model, 'deploy', False)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_choices_and_errors():
    assert [a.name for a in bench.resolve_archs('shvit')] == [
        'shvit_s1', 'shvit_s2', 'shvit_s3', 'shvit_s4']
    assert len(bench.resolve_archs('all')) == len(bench.ARCHS)
    assert bench.case_settings(bench.ARCHS['shvit_s4'],
                               bench.PROTOCOLS['gpu_throughput'])['size'] == (256, 256)
    assert bench.case_settings(bench.ARCHS['shvit_s1'],
                               bench.PROTOCOLS['cpu_throughput'])['batch'] == 16
    det = bench.case_settings(bench.ARCHS['edgevit_xxs'], bench.PROTOCOLS['cpu_latency_det'])
    assert det['size'] == (800, 1344) and det['batch'] == 1 and det['threads'] == 1
    assert {p.name for p in bench.resolve_protocols('cpu')} == {
        'cpu_throughput', 'cpu_latency_seg', 'cpu_latency_det'}
    from mmext.errors import ConfigError
    with pytest.raises(ConfigError, match='unknown arch'):
        bench.resolve_archs('shvit_s9')
    with pytest.raises(ConfigError, match='unknown mode'):
        bench.resolve_modes(['fast'])


def test_cli_end_to_end(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    tool = load_tool('benchmark_backbone')
    out = tmp_path / 'bench' / 'result.json'
    tool.main(['--archs', 'shvit_s1', '--protocols', 'cpu_latency_seg', '--modes', 'eager',
               'deploy', 'onnxruntime', 'cuda_graph', '--tiny', '--no-timm', '--no-reference',
               '--out', str(out)])
    data = json.loads(out.read_text())
    assert data['meta']['torch'] == torch.__version__ and data['meta']['tiny'] is True
    assert data['meta']['malloc'].startswith('system')
    rows = data['rows']
    assert [r['mode'] for r in rows] == ['eager', 'deploy', 'onnxruntime', 'cuda_graph']
    for row in rows:
        check_row(row)
    ort = rows[2]
    assert ort['status'] == 'ok', ort['status']
    assert ort['max_rel_err'] < 1e-4 and ort['ort_threads'] == 1
    md = out.with_suffix('.md').read_text()
    table = [line for line in md.splitlines() if line.startswith('| ')]
    assert len(table) == 1 + len(rows)  # header + one line per row
    for row, line in zip(rows, table[1:]):
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert cells[:4] == [row['arch'], row['source'], row['mode'], row['protocol']]
        assert row['torch'] in cells and row['device_name'] in cells
    assert 'wrote' in capsys.readouterr().out


def test_cli_user_error_exits_2(capsys):
    from mmext.errors import run_cli
    tool = load_tool('benchmark_backbone')
    with pytest.raises(SystemExit) as exc:
        run_cli(tool.main, ['--archs', 'nonexistent', '--tiny'])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith('error: unknown arch')


_RSS_AFTER_FREE = """
import sys, torch
from mmext.deploy.malloc import malloc_setting, retain_freed_memory
def rss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1])
if sys.argv[1] == 'retain':
    assert retain_freed_memory() == (True, None) and retain_freed_memory() == (True, None)
    assert malloc_setting() == 'retain'
before = rss_kib()
t = torch.ones(64 * 2 ** 20 // 4)
del t
print(rss_kib() - before)
"""


@pytest.mark.parametrize('setting', ['system', 'retain'])
def test_malloc_retain_keeps_freed_memory(setting):
    """glibc returns a freed 64 MiB tensor to the OS by default; after retain_freed_memory()
    it keeps it for reuse (the process's resident size stays up). Run in a subprocess: the
    setting is process-wide."""
    import subprocess
    from mmext.deploy.malloc import _glibc
    if _glibc() is None:
        pytest.skip('retain_freed_memory needs glibc; this C library is another')
    env = dict(os.environ)
    env.pop('GLIBC_TUNABLES', None)
    out = subprocess.run([sys.executable, '-c', _RSS_AFTER_FREE, setting], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    kept_mib = int(out.split()[-1]) / 1024
    if setting == 'retain':
        assert kept_mib > 48, kept_mib
    else:
        assert kept_mib < 16, kept_mib


def test_cli_malloc_retain_recorded(tmp_path):
    """--malloc retain is applied before timing and named in the results (own process)."""
    import subprocess
    from mmext.deploy.malloc import _glibc
    if _glibc() is None:
        pytest.skip('--malloc retain needs glibc; this C library is another')
    out = tmp_path / 'r.json'
    subprocess.run([sys.executable, 'tools/benchmark_backbone.py', '--archs', 'shvit_s1',
                    '--protocols', 'cpu_latency_seg', '--modes', 'deploy', '--tiny', '--no-timm',
                    '--no-reference', '--no-peaks', '--malloc', 'retain', '--out', str(out)],
                   check=True, capture_output=True, timeout=600, cwd=REPO)
    data = json.loads(out.read_text())
    assert data['meta']['malloc'] == 'retain'
    assert '- malloc: retain' in out.with_suffix('.md').read_text()
