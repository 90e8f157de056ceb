"""torch >= 2.6 checkpoint loading of mmengine's own checkpoints, and registration."""
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmext  # noqa: F401
from mmext.errors import CheckpointError


def test_mmengine_checkpoint_types_load_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(0.5)
    ckpt = {'meta': {'epoch': 3, 'seed': np.int64(7), 'lr': np.float64(0.1),
                     'message_hub': {'log_scalars': {'train/loss': buffer},
                                     'runtime_info': {'iter': 12, 'arr': np.arange(3)}},
                     'dtype': np.dtype('float32')},
            'state_dict': {'w': torch.ones(2)}}
    path = tmp_path / 'epoch_3.pth'
    torch.save(ckpt, path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta']['seed'] == 7
    assert loaded['meta']['message_hub']['log_scalars']['train/loss'].current() == 0.5
    assert np.array_equal(loaded['meta']['message_hub']['runtime_info']['arr'], np.arange(3))


class Payload:
    def __reduce__(self):
        return (print, ('arbitrary code',))


def test_arbitrary_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'x': Payload()}}, path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'none.pth'))


EXPECTED_MODELS = ['EdgeViT', 'EfficientFormer', 'EfficientFormerV2', 'SHViT', 'TransConvFPN']


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_every_model_is_registered_downstream(scope):
    from mmext.registry import MODELS
    registry = pytest.importorskip(f'{scope}.registry',
                                   reason=f'{scope} is not installed').MODELS
    assert sorted(MODELS.module_dict) == EXPECTED_MODELS  # an explicit list, not the registry's
    for name in EXPECTED_MODELS:
        cls = MODELS.get(name)
        assert registry.get(name) is cls
        assert registry.get(f'mmext.{name}') is cls


def test_custom_imports_in_a_config(tmp_path):
    from mmengine.config import Config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['mmext'], allow_failed_imports=False)\n"
                        "model = dict(type='mmext.TransConvFPN', in_channels=[8, 16, 32], "
                        "out_channels=8, num_outs=5)\n")
    cfg = Config.fromfile(str(cfg_file))
    from mmdet.registry import MODELS
    neck = MODELS.build(cfg.model)
    assert type(neck).__name__ == 'TransConvFPN'


def test_getattr_stand_in_resolves_history_buffer_statistics_only():
    import pickle

    from mmext.compat import _history_buffer_statistic
    assert _history_buffer_statistic(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, '__class__'),
                        (np, 'load'), (HistoryBuffer, 'nonexistent')]:
        with pytest.raises(pickle.UnpicklingError):
            _history_buffer_statistic(owner, name)


def test_real_getattr_is_never_allow_listed():
    """What is registered: getattr names resolve to mmext's restricted stand-in only."""
    import builtins

    from mmext.compat import _history_buffer_statistic
    entries = torch.serialization.get_safe_globals()
    assert builtins.getattr not in entries
    named = {name: fn for fn, name in (e for e in entries if isinstance(e, tuple))}
    assert named['builtins.getattr'] is _history_buffer_statistic
    assert named['__builtin__.getattr'] is _history_buffer_statistic
    assert HistoryBuffer in entries


class GetattrProbe:
    """Unpickles as ``getattr(HistoryBuffer, '__init__')``: a type that is allowed, reached
    through an attribute that is not. With the real getattr allowed, this loads."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_hostile_getattr_probe_is_refused(tmp_path):
    from mmext.checkpoints import load_pretrained
    from mmext.models import SHViT
    path = tmp_path / 'probe.pth'
    torch.save({'state_dict': SHViT('s1').state_dict(), 'meta': {'hook': GetattrProbe()}}, path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    with pytest.raises(CheckpointError, match='weights_only=True'):
        load_pretrained(SHViT('s1'), str(path))


def test_patches_are_version_guarded(monkeypatch):
    import mmengine

    from mmext import compat
    assert compat.APPLIED == [name for name, *_ in compat.PATCHES]  # all three apply here
    monkeypatch.setattr(torch, '__version__', '2.5.1')  # no (object, name) allow-list entries
    assert not compat._torch_allows_globals() and not compat._mmengine_local_loader_fits()
    assert compat._mmengine_metainfo_fits()
    monkeypatch.setattr(torch, '__version__', '2.6.0')
    assert compat._torch_allows_globals() and compat._mmengine_local_loader_fits()
    monkeypatch.setattr(mmengine, '__version__', '0.9.1')
    assert not compat._mmengine_local_loader_fits() and not compat._mmengine_metainfo_fits()
    monkeypatch.setattr(mmengine, '__version__', '1.0.0')
    assert not compat._mmengine_local_loader_fits() and not compat._mmengine_metainfo_fits()


@pytest.mark.slow  # subprocesses that import mmdet/mmseg
def test_mmext_no_patch_turns_every_patch_off(tmp_path):
    import os
    import subprocess
    import sys
    code = ('import torch, mmext\n'
            'from mmext import compat\n'
            'from mmengine.runner.checkpoint import CheckpointLoader\n'
            'from mmengine.config import utils\n'
            'assert compat.APPLIED == [], compat.APPLIED\n'
            "assert CheckpointLoader._schemes[''] is not compat.load_local_weights_only\n"
            'assert utils._get_cfg_metainfo is not compat._cfg_metainfo_cached\n'
            'entries = torch.serialization.get_safe_globals()\n'
            'assert not any(isinstance(e, tuple) for e in entries), entries\n'
            "print('unpatched')\n")
    env = dict(os.environ, MMEXT_NO_PATCH='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and 'unpatched' in proc.stdout, proc.stderr
