"""Bad input to train/test ends in one clear error: a checkpoint that does not fit (another
arch, family, or a backbone-only file), a corrupt or empty one, a work dir a live run holds,
an unknown --cfg-options key, --launcher pytorch outside torchrun; --debug shows the traceback.
All on real configs, real models and real checkpoint files (no training: checked before)."""
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from mmext import apis
from mmext.engine.checkpoint_check import check_state_dict_fits
from mmext.engine.config import load_config
from mmext.engine.workdir_lock import LOCK_NAME, WorkDirLock
from mmext.errors import CheckpointError, ConfigError, MmextError, WorkDirBusyError, run_cli

from .runtime_helpers import (REPO_ROOT, build_config_model, config_path,
                              save_training_checkpoint, seg_overrides, tiny_retinanet_config)

RETINA = 'retinanet/shvit_s1_fpn_1x_coco.py'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, coco_demo):
    """A tiny RetinaNet + SHViT-S1 config and checkpoints: its own, SHViT-S2's (another arch),
    EfficientFormerV2-S0's (another family), a backbone-only one, a corrupt and an empty file."""
    root = tmp_path_factory.mktemp('engine_checks')
    cfg = tiny_retinanet_config(root / 'tiny.py', coco_demo, max_epochs=1)
    paths = dict(cfg=cfg)
    model = build_config_model(cfg)
    paths['own'] = save_training_checkpoint(root / 'own.pth', model)
    for name, other in (('arch', 'retinanet/shvit_s2_fpn_1x_coco.py'),
                        ('family', 'retinanet/efficientformerv2_s0_fpn_1x_coco.py')):
        other_cfg = tiny_retinanet_config(root / f'{name}.py', coco_demo, config=other)
        paths[name] = save_training_checkpoint(root / f'{name}.pth', build_config_model(other_cfg))
    torch.save(model.backbone.state_dict(), str(root / 'backbone.pth'))
    paths['backbone'] = str(root / 'backbone.pth')
    torch.save(model.state_dict(), str(root / 'weights_only.pth'))  # no meta: not resumable
    paths['weights_only'] = str(root / 'weights_only.pth')
    data = open(paths['own'], 'rb').read()
    (root / 'corrupt.pth').write_bytes(data[:len(data) // 2])  # a half-written file
    paths['corrupt'] = str(root / 'corrupt.pth')
    (root / 'empty.pth').write_bytes(b'')
    paths['empty'] = str(root / 'empty.pth')
    return paths


# ----------------------------------------------------------------------- checkpoint fits model
@pytest.mark.parametrize('which, message', [
    ('arch', r'does not fit the model of this config: .*have another shape \(backbone\.'),
    ('family', r'does not fit the model of this config: \d+ model weights are missing from it '
               r'\(backbone\.'),
    ('backbone', 'no weight name in common'),
    ('corrupt', 'Could not read checkpoint'),
    ('empty', 'Could not read checkpoint'),
])
def test_test_refuses_a_checkpoint_that_does_not_fit(tiny, tmp_path, which, message):
    with pytest.raises(CheckpointError, match=message):
        apis.test(tiny['cfg'], tiny[which], work_dir=str(tmp_path))


def test_resume_refuses_a_checkpoint_that_does_not_fit(tiny, tmp_path):
    for which, message in (('arch', 'have another shape'), ('corrupt', 'Could not read'),
                           ('empty', 'Could not read'),
                           ('weights_only', 'not a training checkpoint')):
        work_dir = tmp_path / which
        with pytest.raises(CheckpointError, match=message):
            apis.train(tiny['cfg'], work_dir=str(work_dir), resume=tiny[which])
        # the error came before training and the work dir was released
        assert not osp.exists(work_dir / 'epoch_1.pth')
        assert not osp.exists(work_dir / LOCK_NAME)


def test_fit_rule_on_a_real_state_dict(tiny):
    model = build_config_model(tiny['cfg'])
    state = model.state_dict()
    assert check_state_dict_fits(state, dict(state), 'own') == []
    # extra weights (a head the test config drops) and a missing BN counter are fine
    extra = dict(state, **{'aux.weight': torch.zeros(1)})
    extra = {k: v for k, v in extra.items() if not k.endswith('num_batches_tracked')}
    assert check_state_dict_fits(state, extra, 'extra') == ['aux.weight']
    key = next(k for k in state if k.startswith('bbox_head.') and k.endswith('weight'))
    with pytest.raises(CheckpointError, match=f'1 model weights are missing from it \\({key}\\)'):
        check_state_dict_fits(state, {k: v for k, v in state.items() if k != key}, 'lacking')
    with pytest.raises(CheckpointError, match=f'1 have another shape \\({key}: checkpoint'):
        check_state_dict_fits(state, dict(state, **{key: torch.zeros(2, 2)}), 'reshaped')
    # what inference never runs may be missing when testing only
    aux = dict(state, **{'auxiliary_head.conv.weight': torch.zeros(1)})
    check_state_dict_fits(aux, state, 'no aux', may_lack=('auxiliary_head.',))
    with pytest.raises(CheckpointError, match='auxiliary_head.conv.weight'):
        check_state_dict_fits(aux, state, 'no aux')


# ------------------------------------------------------------------------------ --cfg-options
@pytest.mark.parametrize('key, closest', [
    ('train_cfg.max_epoch', 'train_cfg.max_epochs'),
    ('model.backbone.archh', 'model.backbone.arch'),
    ('model.backbon.arch', 'model.backbone.arch'),
    ('optim_wrapper.optimizer.lrr', 'optim_wrapper.optimizer.lr'),
    ('model.neck.out_channel', 'model.neck.out_channels'),
])
def test_unknown_cfg_option_names_the_closest_key(key, closest):
    with pytest.raises(ConfigError, match=f"key '{key}' is not in the config.*did you mean "
                                          f"'{closest}'"):
        load_config(config_path(RETINA), {key: 1})


def test_cfg_options_that_are_legitimately_new(ade_demo, coco_demo, tmp_path):
    cfg = load_config(config_path(RETINA), {
        'train_cfg.val_begin': 2,              # EpochBasedTrainLoop takes it
        'randomness': dict(seed=1),            # an argument of mmengine's Runner
        'experiment_name': 'x',
        'model.backbone.type': 'mmext.EfficientFormerV2',  # the new type's arguments count
        'model.backbone.drop_path_rate': 0.1,
        'default_hooks.checkpoint': dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
        'train_dataloader.dataset': dict(_delete_=True, type='CocoDataset', anything=1),
    })
    assert cfg.train_cfg.val_begin == 2 and cfg.randomness.seed == 1
    cfg.model.backbone.init_cfg = {}
    cfg = load_config(cfg, {'model.backbone.init_cfg.checkpoint': 'a.pth'})  # an empty entry
    assert cfg.model.backbone.init_cfg == dict(checkpoint='a.pth')
    # the overrides the tool tests use (mmdet and mmseg) pass the check
    load_config(config_path('semfpn/shvit_s1_fpn_40k_ade20k.py'), seg_overrides(ade_demo))
    load_config(tiny_retinanet_config(tmp_path / 'c.py', coco_demo),
                {'train_cfg.max_epochs': 1, 'model.test_cfg.score_thr': 0.1})
    with pytest.raises(ConfigError, match="EfficientFormerV2 takes no argument 'archh'"):
        load_config(config_path(RETINA), {'model.backbone.type': 'mmext.EfficientFormerV2',
                                          'model.backbone.archh': 's0'})
    with pytest.raises(ConfigError, match="'not_a_runner_key'"):
        load_config(config_path(RETINA), {'not_a_runner_key': 1})


# --------------------------------------------------------------------------------- launcher
def test_launcher_pytorch_outside_torchrun(monkeypatch, tmp_path):
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match='--launcher pytorch needs RANK, WORLD_SIZE.*torchrun'):
        apis.train(config_path(RETINA), work_dir=str(tmp_path), launcher='pytorch')
    with pytest.raises(ConfigError, match='torchrun'):
        apis.test(config_path(RETINA), __file__, work_dir=str(tmp_path), launcher='pytorch')
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------- run_cli --debug
def _failing_main(argv=None):
    assert argv is None or '--debug' not in argv  # run_cli takes the flag out
    raise ConfigError('bad value')


@pytest.mark.parametrize('argv, env, traceback', [
    (['x'], None, False), (['x', '--debug'], None, True), (['x'], '1', True)])
def test_run_cli_debug(monkeypatch, capsys, argv, env, traceback):
    monkeypatch.setattr(sys, 'argv', ['tool'] + argv)
    if env:
        monkeypatch.setenv('MMEXT_DEBUG', env)
    else:
        monkeypatch.delenv('MMEXT_DEBUG', raising=False)
    with pytest.raises(SystemExit) as info:
        run_cli(_failing_main)
    assert info.value.code == 2 and '--debug' not in sys.argv
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == 'error: bad value'
    assert ('Traceback' in err) == traceback
    with pytest.raises(SystemExit):  # an explicit argv list loses --debug as well
        run_cli(_failing_main, ['x', '--debug'])
    assert 'Traceback' in capsys.readouterr().err


# ------------------------------------------------------------------------------ work-dir lock
HOLDER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {root!r})
    from mmext.engine.workdir_lock import WorkDirLock
    lock = WorkDirLock(sys.argv[1]).acquire()
    print('held', flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
    lock.release()
''')


def _holder(work_dir, env):
    proc = subprocess.Popen([sys.executable, '-c', HOLDER.format(root=REPO_ROOT), str(work_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == 'held'
    return proc


@pytest.mark.slow  # ~4 s quiet, 12 s on a loaded machine (a CLI subprocess)
def test_work_dir_lock_with_a_real_second_process(tmp_path, subprocess_env):
    work_dir = tmp_path / 'work'
    holder = _holder(work_dir, subprocess_env)
    try:
        with pytest.raises(WorkDirBusyError, match=f'in use by a live run \\(pid {holder.pid}'):
            WorkDirLock(work_dir).acquire()
        # the CLI: one line, exit code 2, before anything is built
        cli = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'),
                              config_path(RETINA), '--work-dir', str(work_dir),
                              '--cfg-options', 'model.backbone.init_cfg=None'],
                             capture_output=True, text=True, env=subprocess_env, timeout=300,
                             cwd=str(tmp_path))
        # (the data set is missing in tmp_path: the data check runs first and says so)
        assert cli.returncode == 2 and cli.stderr.startswith('error: ')
        assert 'Traceback' not in cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no chance to release
        holder.wait()
    assert osp.exists(work_dir / LOCK_NAME)  # stale now
    with WorkDirLock(work_dir) as lock:
        assert lock.note and f'process {holder.pid} is gone' in lock.note
        assert osp.exists(work_dir / LOCK_NAME)
    assert not osp.exists(work_dir / LOCK_NAME)
    # a clean holder releases on exit
    holder = _holder(work_dir, subprocess_env)
    holder.communicate('')
    assert holder.returncode == 0 and not osp.exists(work_dir / LOCK_NAME)


def test_train_refuses_a_held_work_dir(tiny, tmp_path, subprocess_env):
    work_dir = tmp_path / 'work'
    holder = _holder(work_dir, subprocess_env)
    try:
        with pytest.raises(WorkDirBusyError, match=str(holder.pid)):
            apis.train(tiny['cfg'], work_dir=str(work_dir))
        assert os.listdir(work_dir) == [LOCK_NAME]  # nothing written beside the lock
    finally:
        holder.communicate('')
    assert isinstance(WorkDirBusyError('x'), MmextError)


def test_cfg_option_rule_follows_kwargs_and_head_settings():
    rtmdet = config_path('rtmdet/edgevit_s_rtmdet_s_4xb32-100e_coco.py')
    yolox = config_path('yolox/edgevit_s_yolox_s_8xb8-100e_coco.py')
    # heads read their test_cfg with cfg.get: new keys there are accepted
    load_config(yolox, {'model.test_cfg.min_bbox_size': -1, 'model.test_cfg.score_thr': 0.0})
    # RTMDet's head passes **kwargs on to its base classes: a typo is still caught there
    with pytest.raises(ConfigError, match="did you mean 'model.bbox_head.num_classes'"):
        load_config(rtmdet, {'model.bbox_head.num_classe': 3})
    load_config(rtmdet, {'model.bbox_head.loss_centerness': None})  # a base class's argument
