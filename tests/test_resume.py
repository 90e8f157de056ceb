"""--resume is exact: a run stopped after epoch 1 and resumed with tools/train.py --resume ends
with the same weights, bit for bit on the CPU, as the run that went on (RNGStateHook), and the
random states in the checkpoint load with weights_only=True."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from mmext.compat import load_weights_only

from .runtime_helpers import REPO_ROOT, tiny_retinanet_config

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')


def _train(args, env):
    proc = subprocess.run([sys.executable, TRAIN, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _load(path):
    import mmext  # noqa: F401  (allow-lists mmengine's own checkpoint types for weights_only)
    return load_weights_only(path, map_location='cpu')


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


@pytest.mark.slow
def test_resume_is_bit_exact(tmp_path, coco_demo, subprocess_env):
    # No fixed seed (as in mmdet's configs): the resumed run must take the checkpoint's seed
    # for the data sampler and the saved generator states for the random transforms.
    cfg = tiny_retinanet_config(tmp_path / 'retinanet_tiny.py', coco_demo, max_epochs=2)
    full, part = str(tmp_path / 'full'), str(tmp_path / 'resumed')
    _train([cfg, '--work-dir', full], subprocess_env)

    # the state of the run stopped after epoch 1: its epoch-1 checkpoint, in a fresh work dir
    os.makedirs(part)
    shutil.copy(osp.join(full, 'epoch_1.pth'), part)
    out = _train([cfg, '--work-dir', part, '--resume', osp.join(part, 'epoch_1.pth')],
                 subprocess_env)
    assert 'restored the random states' in out

    first = _load(osp.join(full, 'epoch_1.pth'))
    rng = first['rng_state']['ranks']
    assert len(rng) == 1 and {'python', 'numpy', 'torch'} <= set(rng[0])
    assert all(isinstance(x, (int, float, str, type(None), torch.Tensor)) for x in _leaves(rng))

    expected = _load(osp.join(full, 'epoch_2.pth'))['state_dict']
    resumed = _load(osp.join(part, 'epoch_2.pth'))['state_dict']
    assert expected.keys() == resumed.keys()
    differ = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not differ, f'{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}'
    # and training did change the weights in epoch 2 (the comparison is not vacuous)
    assert any(not torch.equal(first['state_dict'][k], expected[k]) for k in expected)
    for work_dir in (full, part):  # the work-dir lock is released at the end
        assert not osp.exists(osp.join(work_dir, '.mmext_train.lock'))


@pytest.mark.slow
def test_iteration_based_resume_is_bit_exact_with_workers(tmp_path, ade_demo, subprocess_env):
    """Semantic FPN, 4 iterations, checkpoints at 2 and 4, random crops and flips in 2 data
    workers. mmengine builds an iteration-based loop's data iterator (and its workers) before
    resuming: the resumed run must start it over with the checkpoint's seed."""
    from .runtime_helpers import config_path, seg_overrides, write_config
    opts = seg_overrides(dict(ade_demo, img_size=64), max_iters=4, checkpoint_interval=2,
                         width=32)
    opts['train_dataloader']['num_workers'] = 2
    opts.update(val_dataloader=None, val_cfg=None, val_evaluator=None)
    cfg = write_config(tmp_path / 'semfpn_tiny.py',
                       config_path('semfpn/shvit_s1_fpn_40k_ade20k.py'), opts)
    full, part = str(tmp_path / 'full'), str(tmp_path / 'resumed')
    _train([cfg, '--work-dir', full], subprocess_env)
    os.makedirs(part)
    shutil.copy(osp.join(full, 'iter_2.pth'), part)
    _train([cfg, '--work-dir', part, '--resume', osp.join(part, 'iter_2.pth')], subprocess_env)
    expected = _load(osp.join(full, 'iter_4.pth'))['state_dict']
    resumed = _load(osp.join(part, 'iter_4.pth'))['state_dict']
    differ = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not differ, f'{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}'
