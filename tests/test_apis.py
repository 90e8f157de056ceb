"""mmext.apis in one process: train and test run twice (each run logs into its own work dir),
and test(fuse=True) really fuses the backbone (no BatchNorm left, same features)."""
import glob
import os.path as osp

import pytest
import torch

from mmext import apis
from mmext.engine.config import load_config
from mmext.engine.hooks import FuseBackboneHook, count_batchnorms
from mmext.engine.launch import adapt_to_device, build_runner
from mmext.utils import max_rel_err, output_list, unwrap_model
from mmext.compat import load_weights_only

from .runtime_helpers import build_config_model, tiny_retinanet_config


def _log_text(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', '*.log'))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        return f.read()


@pytest.fixture(scope='module')
def trained(tmp_path_factory, coco_demo):
    """Two trainings of one tiny config in this process, in two work dirs."""
    root = tmp_path_factory.mktemp('apis')
    cfg = tiny_retinanet_config(root / 'tiny.py', coco_demo, max_epochs=1, val_cfg=None,
                                val_dataloader=None, val_evaluator=None)  # test only
    dirs = [str(root / 'first'), str(root / 'second')]
    for work_dir in dirs:
        apis.train(cfg, work_dir=work_dir)
    return cfg, dirs


@pytest.mark.slow
def test_train_twice_in_one_process(trained):
    cfg, dirs = trained
    for work_dir, other in (dirs, dirs[::-1]):
        assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
        text = _log_text(work_dir)
        assert 'Epoch(train) [1][2/2]' in text and other not in text


@pytest.mark.slow
def test_test_twice_and_fused(trained):
    cfg, dirs = trained
    ckpt = osp.join(dirs[0], 'epoch_1.pth')
    first = apis.test(cfg, ckpt, work_dir=dirs[0])
    again = apis.test(cfg, ckpt, work_dir=dirs[1])
    assert 'coco/bbox_mAP' in first and first == again
    fused = apis.test(cfg, ckpt, work_dir=dirs[1], fuse=True)
    assert fused.keys() == first.keys()


@pytest.mark.slow
def test_fuse_hook_really_fuses(trained, tmp_path):
    cfg_file, dirs = trained
    ckpt = osp.join(dirs[0], 'epoch_1.pth')
    cfg = load_config(cfg_file)
    cfg.work_dir, cfg.load_from = str(tmp_path), ckpt
    adapt_to_device(cfg)
    runner = build_runner(cfg)
    hook = FuseBackboneHook()
    runner.register_hook(hook)
    runner.test()
    backbone = unwrap_model(runner.model).backbone
    assert hook.fused and count_batchnorms(backbone) == 0

    reference = build_config_model(cfg_file)  # the same checkpoint, unfused
    state = load_weights_only(ckpt, map_location='cpu')['state_dict']
    reference.load_state_dict(state)
    assert count_batchnorms(reference.backbone) > 0
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = output_list(reference.backbone.eval()(x))
        got = output_list(backbone.eval()(x))
    assert max_rel_err(expected, got) < 1e-4


def test_two_runners_in_one_second_keep_their_own_logger(tmp_path, coco_demo, monkeypatch):
    """mmengine keys a run's logger by config name + second; a second run of the same config in
    the same second (a frozen clock here) must not log into the first's file."""
    import time
    cfg_file = tiny_retinanet_config(tmp_path / 'tiny.py', coco_demo, max_epochs=1)
    monkeypatch.setattr(time, 'strftime', lambda fmt, *args: '20260101_000000')
    runners = []
    for name in ('a', 'b'):
        cfg = load_config(cfg_file)
        cfg.work_dir = str(tmp_path / name)
        adapt_to_device(cfg)
        runners.append(build_runner(cfg))
    first, second = runners
    assert first.timestamp == second.timestamp  # the situation under test
    assert first.logger is not second.logger
    assert first.logger.log_file != second.logger.log_file
    assert first.message_hub is not second.message_hub
