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


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_every_model_is_registered_downstream(scope):
    from mmext.registry import MODELS
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    assert MODELS.module_dict, 'mmext registers nothing'
    for name, cls in MODELS.module_dict.items():
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
