"""The shared checkpoint loader and SHViT's key mappings, with real files written and read back."""
import argparse
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

import mmext  # noqa: F401
from mmext.checkpoints import (convert_checkpoint, extract_state_dict, init_pretrained,
                               load_pretrained)
from mmext.checkpoints.shvit import shvit_from_official, shvit_from_timm
from mmext.errors import CheckpointError, ConfigError
from mmext.models import SHViT
from tests.helpers import randomize_norms
from tests.weights_helpers import shvit_to_official


# mmext -> the authors' SHViT keys, written independently of mmext's mapping (one copy).
to_official = shvit_to_official


def to_timm(state):
    out = {}
    for key, value in state.items():
        key = key.replace('stem.', 'patch_embed.', 1) if key.startswith('stem.') else key
        key = re.sub(r'\.conv\.(weight|bias)$', r'.c.\1', key) if '.se.' not in key else key
        out[key] = value
    return out


@pytest.fixture(scope='module')
def source():
    """A randomly initialised SHViT-S1 and its features on a fixed input."""
    torch.manual_seed(0)
    model = randomize_norms(SHViT('s1')).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats = model(x)
    return model, x, feats


def _features_after_loading(path, x, arch='s1'):
    model = SHViT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    with torch.no_grad():
        return model.eval()(x)


def _assert_same(a, b):
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


def test_official_layout_loads_with_2d_conv_weights_and_head(source, tmp_path):
    model, x, feats = source
    state = to_official(model.state_dict())
    assert 'blocks2.3.mixer.m.qkv.c.weight' in state and 'patch_embed.0.c.weight' in state
    # the authors' release stores some 1x1 conv weights as matrices
    squeezed = [k for k, v in state.items() if v.ndim == 4 and v.shape[2:] == (1, 1)][:10]
    for k in squeezed:
        state[k] = state[k][:, :, 0, 0]
    state['head.l.weight'] = torch.randn(1000, 320)
    state['head.bn.weight'] = torch.randn(320)
    path = tmp_path / 'shvit_s1_official.pth'
    # the authors' training script also stores its arguments
    args = argparse.Namespace(model='shvit_s1', lr=1e-3, distillation_type='none')
    torch.save({'model': state, 'epoch': 300, 'args': args}, path)
    _assert_same(feats, _features_after_loading(path, x))


def test_timm_layout_loads(source, tmp_path):
    model, x, feats = source
    state = to_timm(model.state_dict())
    assert 'stages.1.downsample.2.conv1.c.weight' in state
    state['head.l.weight'] = torch.randn(1000, 320)
    path = tmp_path / 'timm.pth'
    torch.save(state, path)
    _assert_same(feats, _features_after_loading(path, x))


@pytest.mark.parametrize('wrap', [
    lambda s: {'state_dict': s},
    lambda s: {'state_dict': {'module.' + k: v for k, v in s.items()}},
    lambda s: {'state_dict': {**{'backbone.' + k: v for k, v in s.items()},
                              'neck.lateral_convs.0.weight': torch.zeros(1)}},
])
def test_mmext_layout_loads_wrapped(source, tmp_path, wrap):
    model, x, feats = source
    path = tmp_path / 'mmext.pth'
    torch.save(wrap(model.state_dict()), path)
    _assert_same(feats, _features_after_loading(path, x))


def test_mapping_functions_are_pure_and_explicit():
    state = {'patch_embed.0.c.weight': torch.zeros(16, 3, 3, 3),
             'blocks1.1.ffn.m.pw1.c.weight': torch.zeros(256, 128),
             'blocks2.0.1.m.pw2.bn.bias': torch.zeros(1),
             'blocks2.1.se.fc1.weight': torch.zeros(128, 512, 1, 1),
             'blocks3.2.0.m.c.weight': torch.zeros(1),
             'blocks3.12.mixer.m.pre_norm.weight': torch.zeros(1)}
    before = dict(state)
    out = shvit_from_official(state)
    assert state == before  # the input is untouched
    assert set(out) == {'stem.0.conv.weight', 'stages.0.blocks.1.ffn.m.pw1.conv.weight',
                        'stages.1.downsample.1.m.pw2.bn.bias', 'stages.1.downsample.2.se.fc1.weight',
                        'stages.2.downsample.3.m.conv.weight',
                        'stages.2.blocks.9.mixer.m.pre_norm.weight'}
    assert out['stages.0.blocks.1.ffn.m.pw1.conv.weight'].shape == (256, 128, 1, 1)
    timm_out = shvit_from_timm({'stages.2.blocks.0.mixer.m.proj.1.c.weight': torch.zeros(2, 2)})
    assert list(timm_out) == ['stages.2.blocks.0.mixer.m.proj.1.conv.weight']


def test_missing_and_unexpected_keys_named_in_one_warning(source, tmp_path, caplog):
    model, _, _ = source
    state = dict(model.state_dict())
    del state['stages.2.blocks.4.ffn.m.pw2.bn.weight']
    state['stages.2.blocks.9.extra.weight'] = torch.zeros(3)
    path = tmp_path / 'partial.pth'
    torch.save(state, path)
    target = SHViT('s1')
    messages = []
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('mmext-test-partial')
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record)
    logger.addHandler(handler)
    report = load_pretrained(target, path, logger='mmext-test-partial')
    assert report.missing == ['stages.2.blocks.4.ffn.m.pw2.bn.weight']
    assert report.unexpected == ['stages.2.blocks.9.extra.weight']
    warnings = [r for r in messages if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'stages.2.blocks.4.ffn.m.pw2.bn.weight' in warnings[0].getMessage()
    assert 'stages.2.blocks.9.extra.weight' in warnings[0].getMessage()


def test_other_arch_is_an_error(source, tmp_path):
    model, _, _ = source
    path = tmp_path / 's1.pth'
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit SHViT arch 's4'"):
        load_pretrained(SHViT('s4'), path)


def test_other_family_is_an_error(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(1)},
               path)
    with pytest.raises(CheckpointError, match='not a SHViT checkpoint'):
        load_pretrained(SHViT('s1'), path)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match='init_cfg=None'):
        SHViT('s1', init_cfg=dict(type='Pretrained',
                                  checkpoint=str(tmp_path / 'nope.pth'))).init_weights()


class Payload:
    """Any class: unpickling it would call arbitrary code."""

    def __reduce__(self):
        return (print, ('this would have run',))


def test_pickled_object_is_refused(source, tmp_path):
    model, _, _ = source
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': model.state_dict(), 'extra': Payload()}, path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        load_pretrained(SHViT('s1'), path)


def test_convert_checkpoint_writes_tensors_only(source, tmp_path):
    model, x, feats = source
    src = tmp_path / 'official.pth'
    torch.save({'model': to_official(model.state_dict()), 'optimizer': {'lr': 0.1}}, src)
    dst = tmp_path / 'out' / 'shvit_s1.pth'
    layout, count = convert_checkpoint(src, dst, 'SHViT', arch='s1')
    assert layout == 'official' and count > 0
    loaded = torch.load(dst, weights_only=True)
    assert set(loaded) == {'state_dict', 'meta'}
    state = extract_state_dict(loaded)
    assert all(k.startswith(('stem.', 'stages.')) for k in state)
    _assert_same(feats, _features_after_loading(dst, x))


TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools',
                    'convert_checkpoint.py')


@pytest.mark.slow  # subprocesses that import mmdet/mmseg
def test_convert_checkpoint_tool(source, tmp_path):
    """Run from another directory; the converted file gives the source model's features."""
    model, x, feats = source
    src = tmp_path / 'timm.pth'
    torch.save(to_timm(model.state_dict()), src)
    dst = tmp_path / 'converted.pth'
    proc = subprocess.run([sys.executable, TOOL, str(src), str(dst), '--model', 'SHViT',
                           '--arch', 's1'], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'timm layout' in proc.stdout
    assert set(torch.load(dst, weights_only=True)) == {'state_dict', 'meta'}
    converted = SHViT('s1')
    assert load_pretrained(converted, str(dst)).layout == 'mmext'
    _assert_same(feats, converted.eval()(x))
    written = dst.read_bytes()
    bad = subprocess.run([sys.executable, TOOL, str(src), str(dst), '--model', 'SHViT', '--arch',
                          's4', '--force'], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert 'does not fit' in bad.stderr and 'Traceback' not in bad.stderr
    assert dst.read_bytes() == written  # a failed conversion leaves the existing output as it was


class ShvitWithExtras(SHViT):
    """A user's subclass: not a family name, so its layouts come from the MRO."""


def test_subclass_loads_its_base_family_layouts(source, tmp_path):
    model, x, feats = source
    path = tmp_path / 'timm.pth'
    torch.save(to_timm(model.state_dict()), path)
    sub = ShvitWithExtras('s1')
    report = load_pretrained(sub, str(path))
    assert report.layout == 'timm' and report.missing == []
    _assert_same(feats, sub.eval()(x))


def _timm_file(source, tmp_path):
    path = tmp_path / 'timm.pth'
    torch.save(to_timm(source[0].state_dict()), path)
    return str(path)


@pytest.mark.parametrize('as_list', [False, True])
def test_init_cfg_dict_or_list_goes_through_layout_conversion(source, tmp_path, as_list):
    model, x, feats = source
    cfg = dict(type='Pretrained', checkpoint=_timm_file(source, tmp_path))
    # a list may carry other initialisers; they run first, the pretrained weights win
    init_cfg = [dict(type='Constant', layer='Conv2d', val=0.0), cfg] if as_list else cfg
    target = SHViT('s1')
    report = init_pretrained(target, init_cfg)
    assert report.layout == 'timm' and report.missing == [] and report.unexpected == []
    _assert_same(feats, target.eval()(x))
    assert init_pretrained(SHViT('s1'), [dict(type='Constant', layer='Conv2d', val=0.0)]) is None
    with pytest.raises(ConfigError, match='2 Pretrained entries'):
        init_pretrained(SHViT('s1'), [cfg, cfg])


def test_list_init_cfg_through_init_weights(source, tmp_path):
    """The backbone's own init_weights with a list init_cfg (73 of 391 tensors stayed random when
    a list skipped the layout conversion)."""
    model, x, feats = source
    target = SHViT('s1', init_cfg=[dict(type='Pretrained',
                                        checkpoint=_timm_file(source, tmp_path))])
    target.init_weights()
    _assert_same(feats, target.eval()(x))
