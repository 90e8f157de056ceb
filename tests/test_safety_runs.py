"""No file lost, every error one line, for runs: train.py, test.py, demo.py, the benchmarks,
mmext.apis' argument types and run_cli (issue #19, item 8; helpers in tests/test_safety.py).

Refusals happen before a model is built, so most tests take seconds; the two that train are
marked slow.
"""
import glob
import os
import os.path as osp

import pytest
import torch

from mmext import apis
from mmext.engine.workdir_lock import LOCK_NAME, WorkDirLock
from mmext.errors import ArgumentError, ConfigError, OutputError, run_cli
from mmext.compat import load_weights_only
from tests.helpers import load_tool
from tests.runtime_helpers import (build_config_model, save_training_checkpoint,
                                   tiny_retinanet_config)
from tests.safety_helpers import (file_size_limit, files_in, one_line_error,  # noqa: F401
                                  readonly_dir)

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')

CFG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'retinanet',
               'shvit_s1_fpn_1x_coco.py')


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory, coco_demo):
    root = tmp_path_factory.mktemp('safety_runs')
    return tiny_retinanet_config(root / 'tiny.py', coco_demo, max_epochs=1, val_cfg=None,
                                 val_dataloader=None, val_evaluator=None)


# ----------------------------------------------------------------------------------- train.py
def test_train_refuses_a_work_dir_with_another_runs_checkpoints(tiny_cfg, tmp_path, capsys):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'epoch_12.pth').write_bytes(b'a week of training')
    err = one_line_error(capsys, 'train', [tiny_cfg, '--work-dir', str(work)])
    assert 'epoch_12.pth' in err and '--resume' in err and 'new --work-dir' in err
    assert '--overwrite' in err
    assert files_in(work) == ['epoch_12.pth']  # refused before anything was written
    assert (work / 'epoch_12.pth').read_bytes() == b'a week of training'


def test_resume_refuses_an_empty_work_dir(tiny_cfg, tmp_path, capsys):
    work = tmp_path / 'empty'
    err = one_line_error(capsys, 'train', [tiny_cfg, '--work-dir', str(work), '--resume'])
    assert 'holds no checkpoint to resume from' in err and 'drop --resume' in err
    assert files_in(work) == []  # no log folder, no run
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))  # deleted since
    err = one_line_error(capsys, 'train', [tiny_cfg, '--work-dir', str(work), '--resume'])
    assert 'names ' + str(work / 'epoch_3.pth') + ', which does not exist' in err
    assert files_in(work) == ['last_checkpoint']


def test_train_and_test_refuse_an_unwritable_work_dir(tiny_cfg, tmp_path, readonly_dir,
                                                      capsys):
    for work in (readonly_dir / 'work', tmp_path / 'a_file' / 'work'):
        (tmp_path / 'a_file').write_text('')
        err = one_line_error(capsys, 'train', [tiny_cfg, '--work-dir', str(work)])
        assert 'work dir (--work-dir)' in err and str(work) in err
        err = one_line_error(capsys, 'test', [tiny_cfg, __file__, '--work-dir', str(work)])
        assert 'work dir (--work-dir)' in err and str(work) in err
    assert files_in(readonly_dir) == []


@pytest.mark.slow
def test_full_disk_while_training_stops_with_one_line_and_no_partial_checkpoint(
        tiny_cfg, tmp_path, capsys):
    work = tmp_path / 'work'
    with file_size_limit(1 << 20):  # logs fit, a checkpoint (weights + AdamW state) does not
        err = one_line_error(capsys, 'train', [tiny_cfg, '--work-dir', str(work)])
    assert f'cannot write the checkpoint {work / "epoch_1.pth"}' in err
    assert 'File too large' in err and 'no partial file was left' in err
    assert not glob.glob(str(work / '*.pth')) and not glob.glob(str(work / '.*.part'))
    assert not osp.exists(work / LOCK_NAME)  # released on the error

    # --overwrite starts over in it; the checkpoint gets the user's permissions
    old = os.umask(0o022)
    try:
        (work / 'epoch_1.pth').write_bytes(b'stale')
        run_cli(load_tool('train').main, [tiny_cfg, '--work-dir', str(work), '--overwrite'])
    finally:
        os.umask(old)
    assert load_weights_only(work / 'epoch_1.pth')['meta']['epoch'] == 1
    assert oct(os.stat(work / 'epoch_1.pth').st_mode & 0o777) == oct(0o644)
    assert not glob.glob(str(work / '.*.part'))


# ------------------------------------------------------------------------------------ test.py
@pytest.fixture(scope='module')
def checkpoints(tiny_cfg, tmp_path_factory):
    """The tiny config's model saved unfused and fused (after switch_to_deploy)."""
    root = tmp_path_factory.mktemp('fused')
    model = build_config_model(tiny_cfg)
    unfused = save_training_checkpoint(root / 'unfused.pth', model)
    model.backbone.switch_to_deploy()
    return unfused, save_training_checkpoint(root / 'fused.pth', model)


def test_test_names_deploy_for_fused_and_unfused_mismatches(tiny_cfg, checkpoints, tmp_path,
                                                            capsys):
    unfused, fused = checkpoints
    for extra in ([], ['--fuse']):
        err = one_line_error(capsys, 'test', [tiny_cfg, fused, '--work-dir', str(tmp_path)] +
                             extra)
        assert 'holds a fused SHViT backbone' in err
        assert '--cfg-options model.backbone.deploy=True' in err
    err = one_line_error(capsys, 'test', [tiny_cfg, unfused, '--work-dir', str(tmp_path),
                                          '--cfg-options', 'model.backbone.deploy=True'])
    assert 'holds an unfused SHViT backbone' in err
    assert 'without deploy=True' in err and '--fuse' in err


# ------------------------------------------------------------------------------------ demo.py
#: a demo that would take seconds, were it not refused
TINY_DEMO = ['--config', CFG, '--epochs', '1', '--num-train', '2', '--num-val', '1',
             '--img-size', '64', '--batch-size', '2']


def test_demo_holds_the_work_dir_lock(tmp_path, capsys):
    work, data = tmp_path / 'work', tmp_path / 'data'
    with WorkDirLock(work):  # a live run (this process) holds it
        err = one_line_error(capsys, 'demo', TINY_DEMO + ['--work-dir', str(work),
                                                          '--data-root', str(data)])
    assert 'is in use by a live run' in err and str(os.getpid()) in err
    assert not data.exists()  # refused before generating anything


def test_demo_refuses_an_unwritable_work_dir_or_data_root(tmp_path, readonly_dir, capsys):
    err = one_line_error(capsys, 'demo', TINY_DEMO + ['--work-dir', str(tmp_path / 'work'),
                                                      '--data-root', str(readonly_dir / 'coco')])
    assert 'data folder (--data-root)' in err
    assert not osp.exists(tmp_path / 'work' / LOCK_NAME)
    err = one_line_error(capsys, 'demo', TINY_DEMO + ['--work-dir', str(readonly_dir / 'work'),
                                                      '--data-root', str(tmp_path / 'coco')])
    assert 'cannot write into the work dir' in err and '--work-dir' in err
    assert not osp.exists(tmp_path / 'coco')


# --------------------------------------------------------------------------------- benchmarks
def test_benchmark_out_folder_and_threads_above_the_cores(tmp_path, capsys):
    from mmext.benchmark.report import usable_cores
    threads = usable_cores() + 1
    out = tmp_path / 'results'
    out.mkdir()
    run_cli(load_tool('benchmark_backbone').main, [
        '--archs', 'shvit_s1', '--protocols', 'cpu_latency_seg', '--modes', 'eager', '--tiny',
        '--no-timm', '--no-reference', '--no-peaks', '--no-check', '--threads', str(threads),
        '--out', str(out)])
    captured = capsys.readouterr()
    assert files_in(out) == ['benchmark.json', 'benchmark.md']
    warnings = [line for line in captured.err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1, captured.err
    assert f'--threads {threads} is more than the {threads - 1} CPU cores' in warnings[0]


@pytest.mark.parametrize('tool', ['benchmark_backbone', 'benchmark_detector'])
def test_benchmark_out_that_cannot_be_written_is_refused_before_running(tool, tmp_path,
                                                                       capsys):
    (tmp_path / 'a_file').write_text('keep')
    first = ['--archs', 'shvit_s1', '--tiny'] if tool == 'benchmark_backbone' else \
        [CFG, '--shape', '64', '64']
    for out, says in ((tmp_path / 'a_file' / 'b.json', 'is a file, not a folder'),
                      (tmp_path / 'a_file', 'does not end in .json')):
        with pytest.raises(SystemExit):
            run_cli(load_tool(tool).main, first + ['--out', str(out)])
        captured = capsys.readouterr()
        assert captured.err.startswith('error: ') and says in captured.err
        assert captured.out == ''  # refused before timing anything
    assert (tmp_path / 'a_file').read_text() == 'keep'


def test_summarize_into_a_read_only_folder(tmp_path, readonly_dir):
    (tmp_path / 'work_dirs').mkdir()
    with pytest.raises(OutputError, match='cannot write into'):
        apis.summarize(work_dirs=[str(tmp_path / 'work_dirs')], out_dir=str(readonly_dir),
                       allow_empty=True, make_plot=False)


# --------------------------------------------------------------------------- apis: arguments
@pytest.mark.parametrize('name, args, kwargs, says', [
    ('train', (CFG, ), dict(work_dir=3), 'work_dir must be a path'),
    ('train', (CFG, ), dict(amp='no'), 'amp must be True or False'),
    ('train', (CFG, ), dict(cfg_options=['a=1']), 'cfg_options must be a dict'),
    ('train', (CFG, ), dict(epochs=3), "unexpected keyword argument 'epochs'"),
    ('test', (CFG, 5), {}, 'checkpoint must be a path'),
    ('test', (CFG, __file__), dict(fuse='no'), 'fuse must be True or False'),
    ('run_demo', (), dict(work_dir=3), 'work_dir must be a path'),
    ('run_demo', (), dict(latency_input='abc'), 'latency_input must be a tuple of 4'),
    ('build_backbone', ('SHViT', 1), {}, "arch must be an arch name"),
    ('build_backbone', ('SHViT', 's1'), dict(out_indices='abc'), 'out_indices must be an'),
    ('export_backbone', ('SHViT', 's1', 5), {}, 'out must be a path'),
    ('export_backbone', ('SHViT', 's1', 'x.onnx'), dict(sizes=224), 'sizes must be a list'),
    ('run_benchmark', (), dict(archs=5), 'archs must be a string or a list of strings'),
    ('run_benchmark', (), dict(archs='shvit_s1', iters='3'), 'iters must be an integer'),
    ('measure_latency', ('model', ), {}, 'model must be a torch.nn.Module'),
    ('measure_latency', (torch.nn.Identity(), ), dict(input_shape=5), 'input_shape must be'),
    ('get_flops', (), dict(type=5, arch='s1'), 'type must be a string'),
    ('get_flops', (), dict(type='SHViT', arch='s1', input_size='224'), 'input_size must be'),
    ('summarize', (), dict(work_dirs=5), 'work_dirs must be a path or a list of paths'),
])
def test_apis_check_argument_types(name, args, kwargs, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError) as info:
        getattr(apis, name)(*args, **kwargs)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)
    message = str(info.value)
    assert message.startswith(f'{name}(): ') and says in message and '\n' not in message
    assert files_in(tmp_path) == []  # refused before anything was written


# ------------------------------------------------------------------------------------ run_cli
def test_run_cli_write_errors_and_ctrl_c_are_one_line(tmp_path, capsys):
    (tmp_path / 'a_file').write_text('')

    def write_below_a_file():
        with open(tmp_path / 'a_file' / 'x.json', 'w') as f:
            f.write('{}')

    def interrupted():
        raise KeyboardInterrupt

    for main, code, says in ((write_below_a_file, 2, 'Not a directory'),
                             (interrupted, 130, 'interrupted')):
        with pytest.raises(SystemExit) as exc:
            run_cli(main)
        assert exc.value.code == code
        err = capsys.readouterr().err
        assert err.startswith('error: ') and says in err and err.count('\n') == 1, err
    with pytest.raises(FileNotFoundError):  # not a write problem: a bug, with its traceback
        run_cli(lambda: open(tmp_path / 'missing.txt'))
    # a config of another type: one line (load_config names the types mmengine reads)
    (tmp_path / 'config.txt').write_text('lr = 0.1')
    err = one_line_error(capsys, 'train', [str(tmp_path / 'config.txt'), '--work-dir',
                                           str(tmp_path / 'work')])
    assert 'is not a config file: mmengine reads .py, .yml, .yaml and .json' in err


def test_small_hostile_inputs_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('MMEXT_CACHE_DIR', str(tmp_path / 'cache'))
    (tmp_path / 'a_file').write_text('')
    err = one_line_error(capsys, 'demo', TINY_DEMO + ['--work-dir', str(tmp_path / 'a_file'),
                                                      '--data-root', str(tmp_path / 'd')])
    assert 'is a file, not a folder' in err
    err = one_line_error(capsys, 'export_onnx', ['SHViT', 's1', str(tmp_path / 'm.onnx'),
                                                 '--tol', 'nan'])
    assert '--tol must be a number >= 0' in err
    err = one_line_error(capsys, 'download_weights', ['shvit_s1', '--out', str(tmp_path / 'w'),
                                                      '--mirror', 'not-a-url'])
    assert 'Could not download not-a-url/shvit_s1.pth' in err
