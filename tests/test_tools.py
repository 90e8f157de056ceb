"""The command-line tools end to end, as subprocesses, on the generated data sets:
train -> checkpoint -> resume -> test (mmdet and mmseg), 2-process gloo training through
dist_train.sh, and bad input (a missing data set, a checkpoint of another arch, an unknown
--cfg-options key, --launcher pytorch outside torchrun) ending in one `error:` line, exit 2."""
import glob
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmext.compat import load_weights_only

from .runtime_helpers import (REPO_ROOT, build_config_model, config_path, det_overrides,
                              save_training_checkpoint, seg_overrides, tiny_retinanet_config,
                              write_config)

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')


def run(cmd, env, cwd=REPO_ROOT, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


def check_ok(proc):
    assert proc.returncode == 0, proc.output[-6000:]
    return proc.output


def read_meta(path):
    # our own checkpoint, written a moment ago by mmengine
    import mmext  # noqa: F401  (compat: mmengine's checkpoint types are allow-listed)
    return load_weights_only(path, map_location='cpu')['meta']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_torchrun(cmd, env, attempts=3):
    """Run a dist_*.sh command on a fresh port; retry when another process took the port
    between our probe and torchrun's bind."""
    for _ in range(attempts):
        proc = run(cmd, dict(env, PORT=str(free_port())))
        if proc.returncode == 0 or not any(
                s in proc.output for s in ('EADDRINUSE', 'Address already in use')):
            break
    return proc


@pytest.mark.slow
def test_mmdet_train_resume_test(tmp_path, coco_demo, subprocess_env):
    cfg = write_config(tmp_path / 'mask_rcnn_tiny.py',
                       config_path('mask_rcnn/shvit_s1_fpn_1x_coco.py'),
                       det_overrides(coco_demo, 'mask_rcnn', max_epochs=1))
    work_dir = str(tmp_path / 'work')
    iters_per_epoch = coco_demo['num_train'] // 2

    check_ok(run([sys.executable, TRAIN, cfg, '--work-dir', work_dir], subprocess_env))
    first = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(first)
    assert read_meta(first)['epoch'] == 1

    # --resume (no value): the latest checkpoint of the work dir, then one epoch more
    out = check_ok(run([sys.executable, TRAIN, cfg, '--work-dir', work_dir, '--resume',
                        '--cfg-options', 'train_cfg.max_epochs=2'], subprocess_env))
    assert f'resumed epoch: 1, iter: {iters_per_epoch}' in out
    meta = read_meta(osp.join(work_dir, 'epoch_2.pth'))
    assert meta['epoch'] == 2 and meta['iter'] == 2 * iters_per_epoch

    out = check_ok(run([sys.executable, TEST, cfg, osp.join(work_dir, 'epoch_2.pth'),
                        '--work-dir', work_dir, '--fuse'], subprocess_env))
    # (FuseBackboneHook's own check passed; tests/test_apis.py checks the fused model itself)
    assert 'BatchNorm layers folded, none left, features equal' in out
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    assert 'mmext: test metrics' in out


@pytest.mark.slow
def test_mmseg_train_test(tmp_path, ade_demo, subprocess_env):
    cfg = write_config(tmp_path / 'semfpn_tiny.py',
                       config_path('semfpn/shvit_s1_fpn_40k_ade20k.py'),
                       seg_overrides(ade_demo, max_iters=2))
    work_dir = str(tmp_path / 'work')
    check_ok(run([sys.executable, TRAIN, cfg, '--work-dir', work_dir], subprocess_env))
    ckpt = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt)
    out = check_ok(run([sys.executable, TEST, cfg, ckpt, '--work-dir', work_dir],
                       subprocess_env))
    assert 'mIoU' in out and 'mmext: test metrics' in out


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='checks the CPU path (2 gloo processes on one machine); with CUDA '
                           'dist_train.sh starts one NCCL process per GPU instead')
def test_dist_train_test_two_cpu_processes(tmp_path, coco_demo, subprocess_env):
    """dist_train.sh / dist_test.sh: torchrun, 2 processes, gloo (no CUDA here)."""
    cfg = write_config(tmp_path / 'retinanet_tiny.py',
                       config_path('retinanet/shvit_s1_fpn_1x_coco.py'),
                       det_overrides(coco_demo, 'retinanet', max_epochs=1, batch_size=1))
    work_dir = str(tmp_path / 'work')
    env = subprocess_env
    out = check_ok(run_torchrun(['bash', DIST_TRAIN, cfg, '2', '--work-dir', work_dir], env))
    # rank 0 logs the world size; DDP's gradient all-reduce needs both ranks at every step,
    # so finishing the epoch means both trained
    assert 'Distributed training: True' in out
    assert 'GPU number: 2' in out
    per_rank = coco_demo['num_train'] // 2  # the sampler splits the images between ranks
    assert f'Epoch(train) [1][{per_rank}/{per_rank}]' in out
    assert [osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth'))] == ['epoch_1.pth']
    meta = read_meta(osp.join(work_dir, 'epoch_1.pth'))
    assert meta['epoch'] == 1
    # RNGStateHook gathered both ranks' random states for an exact --resume
    ckpt = load_weights_only(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu')
    assert len(ckpt['rng_state']['ranks']) == 2
    assert not osp.exists(osp.join(work_dir, '.mmext_train.lock'))  # rank 0's, released

    out = check_ok(run_torchrun(['bash', DIST_TEST, cfg, osp.join(work_dir, 'epoch_1.pth'),
                                 '2', '--work-dir', work_dir], env))
    assert 'GPU number: 2' in out
    assert 'coco/bbox_mAP' in out and out.count('mmext: test metrics') == 1  # rank 0 only


@pytest.mark.parametrize('tool, config, hint, process', [
    pytest.param('train', 'mask_rcnn/shvit_s1_fpn_1x_coco.py', 'cocodataset.org', True,
                 marks=pytest.mark.slow),
    ('test', 'mask_rcnn/shvit_s1_fpn_1x_coco.py', 'cocodataset.org', False),
    ('train', 'semfpn/shvit_s1_fpn_40k_ade20k.py', 'ADEChallengeData2016', False),
])
def test_missing_dataset_is_a_clean_error(tmp_path, subprocess_env, capsys, monkeypatch, tool,
                                          config, hint, process):
    """Run from an empty folder: the configs' relative data/coco, data/ade are not there. One
    case as a real process; the others through the tool's main as its command line runs it
    (run_cli: the same one line and exit code 2), without a new interpreter's start-up."""
    args = [config_path(config)]
    if tool == 'test':
        ckpt = tmp_path / 'model.pth'
        ckpt.write_bytes(b'')
        args.append(str(ckpt))
    if process:
        proc = run([sys.executable, TRAIN if tool == 'train' else TEST] + args, subprocess_env,
                   cwd=str(tmp_path), timeout=300)
        code, err, output = proc.returncode, proc.stderr, proc.output
    else:
        from mmext.errors import run_cli
        from tests.helpers import load_tool
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exc:
            run_cli(load_tool(tool).main, args)
        code, (out, err) = exc.value.code, capsys.readouterr()
        output = out + err
    assert code == 2, output[-4000:]
    assert err.startswith('error: dataset not found')
    assert 'Traceback' not in output
    expected_root = 'data/coco' if 'coco' in config else 'data/ade/ADEChallengeData2016'
    assert osp.join(str(tmp_path), expected_root) in err
    assert hint in err and 'make demo' in err
    assert not osp.exists(tmp_path / 'work_dirs')  # failed before building anything


def check_one_line_error(proc, *fragments):
    """Exit code 2, stderr ends in one `error: ...` line holding ``fragments``, no traceback."""
    assert proc.returncode == 2, proc.output[-4000:]
    assert 'Traceback' not in proc.output, proc.output[-4000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
    assert len(errors) == 1, proc.stderr[-4000:]
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-4000:]


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path, coco_demo, subprocess_env):
    cfg = tiny_retinanet_config(tmp_path / 'tiny.py', coco_demo, max_epochs=1)
    other = tiny_retinanet_config(tmp_path / 's2.py', coco_demo,
                                  config='retinanet/shvit_s2_fpn_1x_coco.py')
    ckpt = save_training_checkpoint(tmp_path / 's2.pth', build_config_model(other))
    work = str(tmp_path / 'work')

    proc = run([sys.executable, TEST, cfg, ckpt, '--work-dir', work], subprocess_env)
    check_one_line_error(proc, 'does not fit the model', 'have another shape (backbone.')
    assert 'coco/bbox_mAP' not in proc.output  # refused before testing random weights

    # --debug: the same error, with the traceback first
    proc = run([sys.executable, TEST, cfg, ckpt, '--work-dir', work, '--debug'], subprocess_env)
    assert proc.returncode == 2 and 'Traceback' in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith('error: checkpoint')

    proc = run([sys.executable, TRAIN, cfg, '--work-dir', work, '--resume', ckpt],
               subprocess_env)
    check_one_line_error(proc, 'does not fit the model')
    assert not glob.glob(osp.join(work, 'epoch_*.pth'))



def test_cli_errors_before_the_run_are_one_line(tmp_path, coco_demo, capsys, monkeypatch):
    """A misspelt --cfg-options key and --launcher pytorch outside torchrun stop tools/train.py
    before it builds anything: through its main as the command line runs it (run_cli)."""
    from mmext.errors import run_cli
    from tests.helpers import load_tool
    cfg = tiny_retinanet_config(tmp_path / 'tiny.py', coco_demo, max_epochs=1)
    work = str(tmp_path / 'work')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    for argv, fragments in [
            (['--cfg-options', 'train_cfg.max_epoch=1'], ["did you mean 'train_cfg.max_epochs'"]),
            (['--launcher', 'pytorch'], ['--launcher pytorch needs', 'torchrun'])]:
        with pytest.raises(SystemExit) as exc:
            run_cli(load_tool('train').main, [cfg, '--work-dir', work] + argv)
        out, err = capsys.readouterr()
        assert exc.value.code == 2 and 'Traceback' not in out + err, err[-4000:]
        errors = [line for line in err.splitlines() if line.startswith('error: ')]
        assert len(errors) == 1 and all(f in err for f in fragments), err[-4000:]
    assert not glob.glob(osp.join(work, '*.pth'))
