"""mmext.apis and mmext.engine without running anything: config preparation, CPU adaptation, data checks."""
import pytest
import torch

from mmext.errors import CheckpointError, ConfigError, DatasetNotFoundError
from mmext.engine.config import detect_codebase, load_config
from mmext.engine.datasets import check_datasets
from mmext.engine.launch import adapt_to_device
from mmext.apis.training import prepare_train_cfg

from .runtime_helpers import config_path, det_overrides, seg_overrides

MASK_RCNN = config_path('mask_rcnn/shvit_s1_fpn_1x_coco.py')
SEMFPN = config_path('semfpn/shvit_s1_fpn_40k_ade20k.py')


def test_detect_codebase():
    assert detect_codebase(load_config(MASK_RCNN)) == 'mmdet'
    assert detect_codebase(load_config(SEMFPN)) == 'mmseg'
    cfg = load_config(SEMFPN)
    cfg.pop('default_scope')
    assert detect_codebase(cfg) == 'mmseg'  # from the model type


def test_mmext_scheme_names_a_config():
    """`tools/train.py mmext::mask_rcnn/...` loads the same config as the file path."""
    by_scheme = load_config('mmext::mask_rcnn/shvit_s1_fpn_1x_coco.py')
    assert by_scheme.model.backbone.arch == 's1'
    assert by_scheme.filename == load_config(MASK_RCNN).filename
    with pytest.raises(ConfigError):
        load_config('mmext::mask_rcnn/no_such_config.py')


def test_missing_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        load_config(tmp_path / 'nope.py')


@pytest.mark.parametrize('resume, expected', [
    (False, (False, None)), ('auto', (True, None)), (True, (True, None)),
    ('epoch_3.pth', (True, 'epoch_3.pth'))])
def test_resume_settings(tmp_path, resume, expected):
    if resume == 'epoch_3.pth':  # an explicit checkpoint must exist
        with pytest.raises(CheckpointError, match='does not exist'):
            prepare_train_cfg(MASK_RCNN, work_dir=str(tmp_path), resume=str(tmp_path / resume))
        (tmp_path / resume).write_bytes(b'')
        resume = str(tmp_path / resume)
        expected = (True, resume)
    cfg, codebase = prepare_train_cfg(MASK_RCNN, work_dir=str(tmp_path), resume=resume)
    assert codebase == 'mmdet' and cfg.work_dir == str(tmp_path)
    assert (bool(cfg.get('resume')), cfg.get('load_from')) == expected


def test_cfg_options_and_default_work_dir():
    cfg, _ = prepare_train_cfg(MASK_RCNN, cfg_options={'train_cfg.max_epochs': 3})
    assert cfg.train_cfg.max_epochs == 3
    assert cfg.work_dir.endswith('work_dirs/shvit_s1_fpn_1x_coco')


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='checks the refusal of --amp on a machine without CUDA')
def test_amp_needs_a_gpu():
    with pytest.raises(ConfigError, match='--amp'):
        prepare_train_cfg(MASK_RCNN, amp=True)


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='checks the CPU adaptation (gloo, SyncBN -> BN), which a CUDA '
                           'machine does not apply')
def test_cpu_adaptation():
    cfg = load_config(SEMFPN)
    assert 'SyncBN' in str(cfg.model)  # mmseg's heads use SyncBN
    adapt_to_device(cfg, 'pytorch')
    assert cfg.launcher == 'pytorch'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert 'SyncBN' not in str(cfg.model)
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None


def test_check_datasets(coco_demo, ade_demo, tmp_path):
    cfg = load_config(MASK_RCNN, det_overrides(coco_demo))
    check_datasets(cfg, ['train', 'val', 'test'])
    check_datasets(load_config(SEMFPN, seg_overrides(ade_demo)), ['train', 'val'])

    cfg.train_dataloader.dataset.ann_file = 'annotations/missing.json'
    with pytest.raises(DatasetNotFoundError, match='missing.json') as info:
        check_datasets(cfg, ['train'])
    assert isinstance(info.value, FileNotFoundError)
    assert 'make demo' in str(info.value) and 'cocodataset.org' in str(info.value)

    cfg = load_config(SEMFPN, {'val_dataloader.dataset.data_prefix.seg_map_path': 'nothing'})
    with pytest.raises(DatasetNotFoundError, match='ADEChallengeData2016'):
        check_datasets(cfg, ['val'])


def test_test_needs_an_existing_checkpoint(tmp_path):
    from mmext.apis import test
    with pytest.raises(CheckpointError, match='does not exist'):
        test(MASK_RCNN, str(tmp_path / 'missing.pth'), work_dir=str(tmp_path))


def test_train_checks_the_val_data_too(coco_demo, tmp_path):
    from mmext.apis import train
    from .runtime_helpers import write_config
    cfg = write_config(tmp_path / 'tiny.py', MASK_RCNN, det_overrides(coco_demo, val_interval=1))
    work_dir = tmp_path / 'work'
    with pytest.raises(DatasetNotFoundError, match='val ann_file: .*missing_val.json'):
        train(cfg, work_dir=str(work_dir),
              cfg_options={'val_dataloader.dataset.ann_file': 'annotations/missing_val.json'})
    assert not work_dir.exists()  # refused before anything was built or written


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random
    import numpy as np
    from mmext.engine.rng import get_rng_state, set_rng_state

    def draw():
        return (random.random(), np.random.rand(3).tolist(), float(np.random.randn()),
                torch.rand(3).tolist())

    np.random.randn()  # leave a cached Gaussian in NumPy's state
    torch.save(get_rng_state(), tmp_path / 'rng.pth')
    expected = draw()
    draw()
    set_rng_state(torch.load(tmp_path / 'rng.pth', weights_only=True))
    assert draw() == expected


def test_rng_hook_in_every_training_config():
    import glob
    import os.path as osp
    from mmengine.registry import HOOKS
    assert HOOKS.get('RNGStateHook') is not None
    from .runtime_helpers import REPO_ROOT
    # from the schedule bases, and added to configs that lack it (RTMDet has its own hooks)
    rtmdet = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'rtmdet', '*.py')))[0]
    for config in (MASK_RCNN, SEMFPN, rtmdet):
        assert 'RNGStateHook' in str(load_config(config).get('custom_hooks'))
        cfg, _ = prepare_train_cfg(config)
        types = [h['type'] for h in cfg.custom_hooks]
        assert types.count('RNGStateHook') == 1, types


def test_epoch_based_configs_restart_their_data_workers():
    """Persistent data workers carry random state a checkpoint cannot hold: every epoch-based
    mmext config turns them off so that --resume is exact."""
    import glob
    import os.path as osp
    from .runtime_helpers import REPO_ROOT
    configs = [c for d in ('mask_rcnn', 'retinanet', 'rtmdet', 'yolox')
               for c in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', d, '*.py')))]
    assert len(configs) == 4 * 14
    for config in configs:
        cfg = load_config(config)
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop', config
        assert cfg.train_dataloader.get('persistent_workers') is False, config
        assert 'RNGStateHook' in str(cfg.custom_hooks), config
