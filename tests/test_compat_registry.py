"""mmext.compat: weights-only loading of mmengine's checkpoints on every torch (torch >= 2.6's
allow-list and the restricted unpickler of older torch, both tested on the running torch), the
scoped mmengine loader, the oneDNN capability probe; and registration."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmext  # noqa: F401
from mmext import compat
from mmext.compat.checkpoint import _history_buffer_statistic
from mmext.errors import CheckpointError

#: every weights-only path mmext has, as ``load(path)``; the torch >= 2.6 one only where it exists
LOADERS = {'restricted unpickler': lambda path: compat.restricted_load(path, map_location='cpu')}
if compat.safe_globals_supported():
    LOADERS['weights_only=True + allow-list'] = \
        lambda path: torch.load(path, map_location='cpu', weights_only=True)


def mmengine_load(path):
    with compat.weights_only_checkpoints():
        return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def mmengine_checkpoint(path):
    buffer = HistoryBuffer()
    buffer.update(0.5)
    ckpt = {'meta': {'epoch': 3, 'seed': np.int64(7), 'lr': np.float64(0.1),
                     'message_hub': {'log_scalars': {'train/loss': buffer},
                                     'runtime_info': {'iter': 12, 'arr': np.arange(3)}},
                     'dtype': np.dtype('float32')},
            'state_dict': {'w': torch.ones(2)}}
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize('load', [*LOADERS.values(), mmengine_load],
                         ids=[*LOADERS, 'mmengine loader in scope'])
def test_mmengine_checkpoint_types_load_weights_only(tmp_path, load):
    loaded = load(mmengine_checkpoint(tmp_path / 'epoch_3.pth'))
    assert loaded['meta']['seed'] == 7 and loaded['meta']['dtype'] == np.dtype('float32')
    assert loaded['meta']['message_hub']['log_scalars']['train/loss'].current() == 0.5
    assert np.array_equal(loaded['meta']['message_hub']['runtime_info']['arr'], np.arange(3))
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


class Payload:
    def __reduce__(self):
        return (print, ('arbitrary code',))


@pytest.mark.parametrize('load', list(LOADERS.values()), ids=list(LOADERS))
def test_arbitrary_pickled_object_is_refused_by_every_path(tmp_path, load):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'x': Payload()}}, path)
    with pytest.raises(pickle.UnpicklingError):
        load(path)


def test_arbitrary_pickled_object_is_refused_by_mmengine_in_scope(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'x': Payload()}}, path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        mmengine_load(path)
    from mmext.checkpoints import load_pretrained
    from mmext.models import SHViT
    with pytest.raises(CheckpointError, match='weights_only=True'):
        load_pretrained(SHViT('s1'), str(path))


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        mmengine_load(tmp_path / 'none.pth')


def test_mmengine_loader_is_changed_only_inside_the_scope():
    from mmext.compat.mmengine_patches import load_local_weights_only
    before = CheckpointLoader._schemes['']
    assert before is not load_local_weights_only  # import mmext left mmengine's loader alone
    with compat.weights_only_checkpoints():
        assert CheckpointLoader._schemes[''] is load_local_weights_only
    assert CheckpointLoader._schemes[''] is before
    with pytest.raises(RuntimeError), compat.weights_only_checkpoints():
        raise RuntimeError('restored on errors too')
    assert CheckpointLoader._schemes[''] is before


def test_config_metainfo_cache_is_scoped():
    from mmengine.config import utils as config_utils

    from mmext.compat.mmengine_patches import _cfg_metainfo_cached
    before = config_utils._get_cfg_metainfo
    assert before is not _cfg_metainfo_cached
    with compat.cached_config_metainfo():
        assert config_utils._get_cfg_metainfo is _cfg_metainfo_cached
    assert config_utils._get_cfg_metainfo is before


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
    assert _history_buffer_statistic(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, '__class__'),
                        (np, 'load'), (HistoryBuffer, 'nonexistent')]:
        with pytest.raises(pickle.UnpicklingError):
            _history_buffer_statistic(owner, name)


@pytest.mark.skipif(not compat.safe_globals_supported(),
                    reason='torch < 2.6 has no (object, name) add_safe_globals; the restricted '
                           'unpickler is tested instead')
def test_real_getattr_is_never_allow_listed():
    """What is registered: getattr names resolve to mmext's restricted stand-in only."""
    import builtins

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


@pytest.mark.parametrize('load', list(LOADERS.values()), ids=list(LOADERS))
def test_hostile_getattr_probe_is_refused_by_every_path(tmp_path, load):
    path = tmp_path / 'probe.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'hook': GetattrProbe()}}, path)
    with pytest.raises(pickle.UnpicklingError):
        load(path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        mmengine_load(path)


def test_load_weights_only_picks_the_path_of_the_running_torch(monkeypatch, tmp_path):
    from mmext.compat import checkpoint
    calls = []
    monkeypatch.setattr(checkpoint, 'restricted_load',
                        lambda f, map_location=None: calls.append(f) or {})
    path = mmengine_checkpoint(tmp_path / 'ckpt.pth')
    compat.load_weights_only(path)
    assert calls == ([] if compat.safe_globals_supported() else [path])
    monkeypatch.setattr(checkpoint, 'TORCH_VERSION', (2, 1))
    compat.load_weights_only(path)
    assert calls[-1] == path


def test_patches_are_version_guarded(monkeypatch):
    import mmengine

    from mmext.compat import checkpoint, mmengine_patches
    monkeypatch.setattr(checkpoint, 'TORCH_VERSION', (2, 5))  # no (object, name) pairs
    assert not compat.safe_globals_supported()
    assert mmengine_patches.local_loader_fits() and mmengine_patches.metainfo_fits()
    for version in ('0.9.1', '1.0.0'):
        monkeypatch.setattr(mmengine, '__version__', version)
        assert not mmengine_patches.local_loader_fits() and not mmengine_patches.metainfo_fits()
        before = CheckpointLoader._schemes['']
        with compat.weights_only_checkpoints():
            assert CheckpointLoader._schemes[''] is before  # left alone


@pytest.mark.slow  # subprocesses that import mmdet/mmseg
def test_mmext_no_patch_turns_every_patch_off(tmp_path):
    import os
    import subprocess
    import sys
    code = ('import torch, mmext\n'
            'from mmext import compat\n'
            'from mmext.compat import mmengine_patches as mp\n'
            'from mmengine.runner.checkpoint import CheckpointLoader\n'
            'from mmengine.config import utils\n'
            'with compat.weights_only_checkpoints(), compat.cached_config_metainfo():\n'
            "    assert CheckpointLoader._schemes[''] is not mp.load_local_weights_only\n"
            '    assert utils._get_cfg_metainfo is not mp._cfg_metainfo_cached\n'
            "if hasattr(torch.serialization, 'get_safe_globals'):\n"
            '    entries = torch.serialization.get_safe_globals()\n'
            '    assert not any(isinstance(e, tuple) for e in entries), entries\n'
            "print('unpatched')\n")
    env = dict(os.environ, MMEXT_NO_PATCH='1')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and 'unpatched' in proc.stdout, proc.stderr


# ------------------------------------------------------------------------ oneDNN capability
def test_onednn_probe_finds_the_fused_ops_here():
    if not torch.backends.mkldnn.is_available():
        pytest.skip('torch built without oneDNN')
    assert compat.onednn_status(torch.float32) is None
    assert compat.onednn_fused(torch.float32)
    assert compat.onednn_status(torch.float16) is not None


def test_onednn_probe_refuses_ops_that_disagree_and_layers_fall_back(monkeypatch):
    import torch.nn as nn

    from mmext.compat import torch_ops
    from mmext.models import onednn
    real = torch_ops.mkldnn_linear
    monkeypatch.setattr(torch_ops, 'mkldnn_linear', lambda *a: real(*a) * 1.01)
    torch_ops._probe.cache_clear()
    try:
        assert 'differs from the plain ops' in torch_ops.onednn_status(torch.float32)
        assert not onednn.fused_ok(nn.Linear(4, 4), torch.randn(2, 4))
        monkeypatch.setattr(torch_ops, 'mkldnn_linear', lambda *a: 1 / 0)
        torch_ops._probe.cache_clear()
        assert 'ZeroDivisionError' in torch_ops.onednn_status(torch.float32)
    finally:
        monkeypatch.undo()
        torch_ops._probe.cache_clear()
    assert compat.onednn_fused(torch.float32) == torch.backends.mkldnn.is_available()


def test_import_mmext_only_registers(tmp_path):
    """``import mmext``: no mmdet/mmseg/mmcv import, mmengine's loaders untouched, its time
    printed; mmdet's and mmseg's registries get mmext's modules when they are imported later."""
    import subprocess
    import sys
    code = ('import sys, time\n'
            'import torch, mmengine.model, mmengine.runner\n'
            'from mmengine.runner.checkpoint import CheckpointLoader\n'
            'from mmengine.config import utils\n'
            "loader, metainfo = CheckpointLoader._schemes[''], utils._get_cfg_metainfo\n"
            't = time.perf_counter()\n'
            'import mmext\n'
            'dt = time.perf_counter() - t\n'
            "heavy = [m for m in ('mmdet', 'mmseg', 'mmcv') if m in sys.modules]\n"
            'assert not heavy, heavy\n'
            "assert CheckpointLoader._schemes[''] is loader\n"
            'assert utils._get_cfg_metainfo is metainfo\n'
            'from mmdet.registry import MODELS as DET\n'
            'from mmseg.registry import MODELS as SEG\n'
            "assert DET.get('SHViT').__module__ == 'mmext.models.shvit'\n"
            "assert SEG.get('EdgeViT').__module__ == 'mmext.models.edgevit'\n"
            "print(f'import mmext took {dt:.2f} s after torch and mmengine')\n")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout.strip())
    seconds = float(proc.stdout.split('took ')[1].split(' s')[0])
    assert seconds < 3.0, proc.stdout  # mmext's own modules only (0.1-0.3 s on an idle 2-core VM)
