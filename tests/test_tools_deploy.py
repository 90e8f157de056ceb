"""The deploy/analysis command lines refuse bad input with one ``error: ...`` line and exit code 2,
and never destroy a file: tools/export_onnx.py, tools/summarize_results.py, tools/get_flops.py."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.helpers import cli_error as user_error
from tests.helpers import load_tool
from tests.test_summarize import bench_row

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def snapshot(folder):
    """``{name: bytes}`` of every file in ``folder`` (hidden temporary files included)."""
    return {name: open(osp.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


# ------------------------------------------------------------------------------------ export
@pytest.fixture
def shvit_checkpoint(tmp_path):
    """A real SHViT-S1 checkpoint (tensors only), written with torch.save."""
    from mmext.deploy import build_backbone
    path = tmp_path / 'shvit_s1.pth'
    torch.save(build_backbone('SHViT', 's1', deploy=False).state_dict(), path)
    return path


@pytest.mark.slow
def test_export_cli_writes_a_graph_onnxruntime_runs(tmp_path, subprocess_env):
    """The command line end to end; ONNX Runtime then runs the file at a size not verified."""
    ort = pytest.importorskip('onnxruntime')
    out = tmp_path / 'new' / 'shvit_s1.onnx'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'export_onnx.py'), 'SHViT',
                           's1', str(out), '--sizes', '64x64', '80x112'],
                          env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'wrote {out}' in proc.stdout and '80x112: max relative error' in proc.stdout
    assert os.listdir(out.parent) == ['shvit_s1.onnx']  # no temporary file left
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    outs = session.run(None, {'input': torch.randn(2, 3, 96, 128).numpy()})
    # SHViT-S1 returns strides 16, 32, 64 with 128, 224, 320 channels
    assert [list(o.shape) for o in outs] == [[2, 128, 6, 8], [2, 224, 3, 4], [2, 320, 2, 2]]
    assert [o.name for o in session.get_outputs()] == ['level0', 'level1', 'level2']


def test_export_never_writes_over_a_checkpoint(tmp_path, capsys, shvit_checkpoint):
    before = snapshot(tmp_path)
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(shvit_checkpoint)])
    assert 'does not end in .onnx' in err
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(shvit_checkpoint), '--checkpoint',
                                             str(shvit_checkpoint), '--force'])
    assert 'is the input' in err
    assert snapshot(tmp_path) == before
    state = torch.load(shvit_checkpoint, weights_only=True)  # still the weights, readable
    assert any(k.endswith('weight') for k in state)


def test_export_keeps_an_existing_onnx_without_force(tmp_path, capsys):
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'an earlier export')
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(out)])
    assert 'already exists' in err and '--force' in err
    assert snapshot(tmp_path) == {'model.onnx': b'an earlier export'}


def test_export_failing_verification_leaves_nothing(tmp_path, capsys):
    """--tol 0 fails the check: no new file, an existing one (with --force) kept as it was."""
    out = tmp_path / 'model.onnx'
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(out), '--tol', '0',
                                             '--sizes', '32'])
    assert 'does not match PyTorch' in err and 'nothing was written' in err
    assert os.listdir(tmp_path) == []
    out.write_bytes(b'an earlier export')
    user_error(capsys, 'export_onnx', ['SHViT', 's1', str(out), '--tol', '0', '--sizes', '32',
                                       '--force'])
    assert snapshot(tmp_path) == {'model.onnx': b'an earlier export'}


def test_export_unwritable_output(tmp_path, capsys):
    (tmp_path / 'a_file').write_text('not a folder')
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(tmp_path / 'a_file' / 'm.onnx')])
    assert 'cannot create the output folder' in err
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(tmp_path)])
    assert 'does not end in .onnx' in err
    (tmp_path / 'dir.onnx').mkdir()
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(tmp_path / 'dir.onnx')])
    assert 'is a folder' in err
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(locked / 'm.onnx')])
        assert 'permission denied' in err


def test_export_bad_size(capsys, tmp_path):
    err = user_error(capsys, 'export_onnx', ['SHViT', 's1', str(tmp_path / 'm.onnx'),
                                             '--sizes', '0x64'])
    assert 'a size is HxW' in err


# ------------------------------------------------------------------------------------ summarize
def test_summarize_no_runs_is_an_error_unless_allowed(tmp_path, capsys):
    empty = tmp_path / 'work_dirs'
    empty.mkdir()
    (empty / 'some_config').mkdir()  # a work dir without any run folder
    out = tmp_path / 'summary'
    err = user_error(capsys, 'summarize_results', ['--work-dirs', str(empty), '--out', str(out)])
    assert 'no test or validation results found' in err and '--allow-empty' in err
    assert not out.exists()
    load_tool('summarize_results').main(['--work-dirs', str(empty), '--out', str(out),
                                         '--allow-empty', '--no-plot'])
    captured = capsys.readouterr()
    assert "warning: no runs with results under" in captured.err
    assert sorted(os.listdir(out)) == ['summary.csv', 'summary.md']
    assert 'SHViT-S4' in captured.out  # the papers' rows
    from mmext.analysis.summarize import summarize
    from mmext.errors import ConfigError
    with pytest.raises(ConfigError, match='no test or validation results'):
        summarize(work_dirs=[str(empty)], out_dir=str(tmp_path / 'api'))
    assert not (tmp_path / 'api').exists()


@pytest.mark.parametrize('content,says', [
    ('{"rows": [', 'invalid JSON at line 1'),
    ('{"meta": {}}', 'expected {"meta": ..., "rows": [...]}'),
    ('[1, 2]', 'row 0 (int 1) lacks arch'),
    (json.dumps({'rows': [{'arch': 'shvit_s1', 'median_ms': 3.0}]}), 'lacks source, mode'),
    ('\x89PNG\x00\xff', 'not a benchmark JSON'),
])
def test_summarize_bad_benchmark_json(tmp_path, capsys, content, says):
    bench = tmp_path / 'bench.json'
    bench.write_bytes(content.encode('latin-1'))
    (tmp_path / 'work_dirs').mkdir()
    err = user_error(capsys, 'summarize_results', [
        '--work-dirs', str(tmp_path / 'work_dirs'), '--allow-empty', '--benchmark', str(bench),
        '--out', str(tmp_path / 'out')])
    assert 'bench.json' in err and says in err
    assert not (tmp_path / 'out').exists()


def test_summarize_out_is_a_file_and_unknown_latency_protocol(tmp_path, capsys):
    from mmext.benchmark import write_results
    (tmp_path / 'work_dirs').mkdir()
    bench = str(tmp_path / 'bench.json')
    write_results([bench_row('shvit_s1', 5.0)], bench, meta={'torch': torch.__version__})
    out = tmp_path / 'summary.md'
    out.write_text('my notes')
    base = ['--work-dirs', str(tmp_path / 'work_dirs'), '--allow-empty', '--benchmark', bench]
    err = user_error(capsys, 'summarize_results', base + ['--out', str(out)])
    assert 'is an existing file, not a folder' in err
    assert out.read_text() == 'my notes'
    err = user_error(capsys, 'summarize_results', base + ['--out', str(tmp_path / 'o'),
                                                          '--latency-protocol', 'gpu_latency_det'])
    assert "no 'gpu_latency_det' rows" in err and 'cpu_latency_seg' in err


# ------------------------------------------------------------------------------------ get_flops
@pytest.mark.parametrize('shape,says', [
    (['100000', '100000'], 'too large to count on this machine'),
    (['0'], 'both positive'),
    (['-5', '10'], 'both positive'),
    (['1', '2', '3'], 'must be H W'),
])
def test_get_flops_refuses_sizes(capsys, shape, says):
    err = user_error(capsys, 'get_flops',
                     ['--backbone', 'SHViT', '--arch', 's1', '--shape'] + shape)
    assert says in err


def test_get_flops_refuses_a_config_size_before_building(capsys):
    config = osp.join(ROOT, 'configs/retinanet/shvit_s1_fpn_1x_coco.py')
    err = user_error(capsys, 'get_flops', [config, '--shape', '100000'])
    assert 'too large' in err and 'GB' in err


def overcommit_refuses_huge_allocations():
    try:
        with open('/proc/sys/vm/overcommit_memory') as f:
            return f.read().strip() in ('0', '2')
    except OSError:
        return False


@pytest.mark.skipif(not overcommit_refuses_huge_allocations(),
                    reason='only where Linux refuses a 120 GB allocation outright '
                    '(vm.overcommit_memory 0 or 2); elsewhere it could reach the OOM killer')
def test_get_flops_turns_a_failed_allocation_into_one_line(capsys, monkeypatch):
    """Where the free memory is unknown the size passes the check; the real allocation of the
    100000x100000 input then fails and must read as one error line."""
    import mmext.analysis.flops as flops
    monkeypatch.setattr(flops, 'available_memory', lambda: None)
    err = user_error(capsys, 'get_flops', ['--backbone', 'SHViT', '--arch', 's1',
                                           '--shape', '100000'])
    assert 'ran out of memory counting at 100000x100000' in err


def test_export_unknown_backbone(capsys, tmp_path):
    err = user_error(capsys, 'export_onnx', ['SHVit', 's1', str(tmp_path / 'm.onnx')])
    assert "unknown backbone type 'SHVit'" in err and 'SHViT' in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('argv,says', [
    (['--backbone', 'SHViT', '--arch', 's1', '--part', 'model'], 'needs a config'),
    (['--backbone', 'SHViT', '--arch', 's1', '--cfg-options', 'a=1'], 'needs a config file'),
    (['--backbone', 'SHViT'], 'give a config file, or a backbone type and arch'),
    (['configs/retinanet/shvit_s1_fpn_1x_coco.py', '--backbone', 'SHViT', '--arch', 's1'],
     'not both'),
])
def test_get_flops_options_that_would_be_ignored(capsys, argv, says):
    assert says in user_error(capsys, 'get_flops', argv)
