"""SHViT: what only SHViT has (arch rules, GroupNorm pre-norms, deploy's fused FFN sums, the
stride-8 level); the rest of the backbone contract is tests/test_models_contract.py."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.errors import ConfigError
from mmext.models import SHViT
from mmext.models.families import FAMILIES
from tests.helpers import max_rel_error, randomize_norms

# (Paper params/MACs and channels of every arch, output sizes, out_indices, frozen_stages,
# norm_eval, with_cp, drop_path, deploy equality and checkpoints: tests/test_models_contract.py,
# for every family.) The tiny arch of the family manifest:
TINY = FAMILIES['SHViT'].tiny


def _tiny(**kwargs):
    torch.manual_seed(0)
    return randomize_norms(SHViT(TINY, **kwargs))


@pytest.mark.parametrize('arch, match', [
    (dict(TINY, partial_dims=[8, 60, 16]), r'partial_dims\[1\]'),
    (dict(TINY, embed_dims=[36, 48, 64]), 'multiple of 8'),
])
def test_shvit_arch_rules(arch, match):
    with pytest.raises(ConfigError, match=match):
        SHViT(arch)


def test_norm_eval_leaves_the_group_norm_pre_norms_training():
    """(Every BatchNorm in eval, all else training: the contract test.) SHViT's attention
    pre-norms are GroupNorms, which norm_eval leaves alone."""
    model = SHViT(TINY, norm_eval=True).train()
    groups = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert groups and all(m.training for m in groups)


@pytest.mark.parametrize('arch, size', [('s4', (224, 224)), ('s1', (97, 131))])
def test_switch_to_deploy_fuses_ffn_sums_and_relus(arch, size):
    """Deploy equals eval, with every FFN's pw2 + residual one oneDNN op (the binary overload)
    and the FFNs' and patch mergings' ReLU modules not run (fused into their convs)."""
    model = randomize_norms(SHViT(arch)).eval()
    x = torch.randn(1, 3, *size)
    from mmext import compat
    # probed here: on a fresh process the probe's own fused ops would be in the profile
    assert compat.onednn_fused(torch.float32), compat.onednn_status(torch.float32)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model).switch_to_deploy()
        ran = []
        for name, m in fused.named_modules():
            if isinstance(m, nn.ReLU) and ('ffn' in name or name.endswith(('act1', 'act2'))):
                m.register_forward_hook(lambda *a, name=name: ran.append(name))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=True) as prof:
            out = fused(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert max_rel_error(ref, out) < 1e-5
    ffns = sum(type(m).__name__ == 'FFN' for m in fused.modules())
    sums = [e for e in prof.events() if e.name == 'mkldnn::_convolution_pointwise'
            and len(e.input_shapes) == 13]  # binary overload: X, other, W, B, ...
    assert len(sums) == ffns and not ran, (len(sums), ffns, ran[:3])


# ----------------------------------------------------------------------------- stride-8 level
@pytest.mark.parametrize('mode', ['stem', 'upsample'])
@pytest.mark.parametrize('out_indices', [(0, 1), (1, 2), (2, ), (0, )])
@pytest.mark.parametrize('size', [(64, 64), (97, 131), (8, 8), (9, 17)])
def test_stride8_shapes(mode, out_indices, size):
    model = _tiny(stride8=mode, out_indices=out_indices).eval()
    assert model.stride8_channels == 16
    assert model.out_channels == [16] + [TINY['embed_dims'][i] for i in out_indices]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    strides = [8] + [16 * 2**i for i in out_indices]
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
        for c, s in zip(model.out_channels, strides)]


def test_stride8_keeps_the_stage_outputs():
    plain = _tiny(out_indices=(0, 1)).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        ref = plain(x)
        for mode in ('stem', 'upsample'):
            model = _tiny(stride8=mode, out_indices=(0, 1)).eval()
            model.load_state_dict(plain.state_dict(), strict=False)
            outs = model(x)
            assert len(outs) == 3 and all(torch.equal(a, b) for a, b in zip(ref, outs[1:]))


def test_stride8_stem_is_the_stems_third_conv_map():
    model = _tiny(stride8='stem').eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        s8 = x
        for i in (0, 2, 4):  # three 3x3 stride-2 Conv-BN + ReLU
            s8 = torch.relu(model.stem[i](s8))
        assert torch.equal(model(x)[0], s8)


def test_stride8_upsample_is_a_transposed_conv_cropped_top_left():
    model = _tiny(stride8='upsample', out_indices=(0, )).eval()
    conv, bn = model.stride8_upsample[0].conv, model.stride8_upsample[0].bn
    x = torch.randn(1, 3, 97, 131)  # stride-16 grid 7x9 -> 14x18, cropped to 13x17
    with torch.no_grad():
        up, x16 = model(x)
        full = F.conv_transpose2d(x16, conv.weight, stride=2)
        full = (full - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + bn.eps) * bn.weight.view(1, -1, 1, 1) + \
            bn.bias.view(1, -1, 1, 1)
    assert full.shape[-2:] == (14, 18)
    assert torch.allclose(up, full.relu()[..., :13, :17], atol=1e-5)


def test_stride8_frozen_stages():
    model = _tiny(stride8='upsample', frozen_stages=0)
    model.train()
    assert all(not p.requires_grad for p in model.stem.parameters())
    assert all(not m.training for m in model.stem.modules())
    # the upsampling branch is new (not in ImageNet weights): it trains
    assert all(p.requires_grad for p in model.stride8_upsample.parameters())
    assert model.stride8_upsample.training
    outs = model(torch.randn(2, 3, 64, 64))
    outs[0].square().mean().backward()
    assert model.stride8_upsample[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['stem', 'upsample'])
def test_stride8_deploy(mode):
    model = _tiny(stride8=mode, out_indices=(0, 1)).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model).switch_to_deploy()
        out = fused(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert max_rel_error(ref, out) < 1e-5
    built = SHViT(TINY, stride8=mode, out_indices=(0, 1), deploy=True)
    assert set(built.state_dict()) == set(fused.state_dict())
    built.load_state_dict(fused.state_dict())
    with torch.no_grad():
        assert max_rel_error(ref, built.eval()(x)) < 1e-5


def test_stride8_bad_value():
    with pytest.raises(ConfigError, match='stride8'):
        SHViT(TINY, stride8='neck')


def test_stride8_onnx_at_two_sizes(tmp_path):
    from mmext.compat.onnx_export import onnx_export
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is needed for the ONNX check')
    model = _tiny(stride8='upsample', out_indices=(0, 1)).eval().switch_to_deploy()
    path = str(tmp_path / 's8.onnx')
    names = ['s8', 'l0', 'l1']
    with torch.no_grad():
        onnx_export(model, (torch.randn(1, 3, 64, 64), ), path, input_names=['x'],
                    output_names=names, opset_version=17,
                    dynamic_axes={'x': {0: 'n', 2: 'h', 3: 'w'},
                                  **{k: {0: 'n', 2: f'{k}h', 3: f'{k}w'} for k in names}})
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for size in ((64, 64), (97, 131)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ref = model(x)
        outs = sess.run(None, {'x': x.numpy()})
        assert [o.shape for o in outs] == [tuple(r.shape) for r in ref]
        assert max_rel_error(ref, [torch.from_numpy(o) for o in outs]) < 1e-4
