import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.analysis import count_macs, count_params
from mmext.models import SHViT
from tests.helpers import max_rel_error, randomize_norms

# The authors' figures: params without the classifier, MACs with it (at 224, S4 at 256).
PAPER = {
    's1': dict(dims=[128, 224, 320], params=6.009, macs=0.241, size=224),
    's2': dict(dims=[128, 308, 448], params=11.033, macs=0.365, size=224),
    's3': dict(dims=[192, 352, 448], params=13.795, macs=0.601, size=224),
    's4': dict(dims=[224, 336, 448], params=16.139, macs=0.986, size=256),
}


@pytest.mark.parametrize('arch', sorted(PAPER))
def test_params_and_macs_match_paper(arch):
    model = SHViT(arch)
    ref = PAPER[arch]
    assert round(count_params(model) / 1e6, 3) == ref['params']
    head_macs = ref['dims'][-1] * 1000  # BN-Linear classifier, 1000 classes
    macs = count_macs(model, (1, 3, ref['size'], ref['size'])) + head_macs
    assert round(macs / 1e9, 3) == ref['macs']


@pytest.mark.parametrize('size', [(224, 224), (64, 96), (97, 131), (512, 512)])
def test_output_shapes_any_size(size):
    model = SHViT('s1').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert len(outs) == 3
    for i, out in enumerate(outs):
        stride = 16 * 2**i
        assert out.shape == (1, PAPER['s1']['dims'][i], math.ceil(size[0] / stride),
                             math.ceil(size[1] / stride))


def test_detection_sized_odd_input():
    model = SHViT('s4', out_indices=(2, )).eval()
    with torch.no_grad():
        (out, ) = model(torch.randn(1, 3, 801, 1203))
    assert out.shape == (1, 448, 13, 19)


@pytest.mark.parametrize('arch', sorted(PAPER))
def test_every_arch_builds_with_out_channels(arch):
    model = SHViT(arch, out_indices=(0, 2))
    assert model.out_channels == [PAPER[arch]['dims'][0], PAPER[arch]['dims'][2]]
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == model.out_channels


def test_custom_arch_dict():
    arch = dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], partial_dims=[8, 12, 16])
    outs = SHViT(arch).eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 48, 64]


def test_negative_out_indices():
    assert SHViT('s1', out_indices=(-1, )).out_indices == (2, )


def test_frozen_stages():
    model = SHViT('s1', frozen_stages=1)
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert model.stages[2].training


@pytest.mark.parametrize('sync', [False, True])
def test_norm_eval_keeps_batchnorm_in_eval(sync):
    model = SHViT('s1', norm_eval=True)
    if sync:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms) == sync
    # the rest still trains: every other module (attention, GroupNorm pre-norms, blocks)
    others = [m for m in model.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert any(isinstance(m, nn.GroupNorm) for m in others)
    assert all(m.training for m in others)
    model.norm_eval = False
    model.train()
    assert all(m.training for m in model.modules())


def test_drop_path_rates_rise_linearly():
    model = SHViT('s1', drop_path_rate=0.2)
    rates = [b.ffn.drop_path_rate for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    assert all(b.mixer.drop_path_rate == b.ffn.drop_path_rate
               for s in model.stages[1:] for b in s.blocks)


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = randomize_norms(SHViT('s1', norm_eval=True))
    ckpt = copy.deepcopy(plain)
    ckpt.with_cp = True
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(model.stages[1].blocks[0].mixer.m.qkv.conv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize('arch, size', [('s4', (224, 224)), ('s1', (800, 1216))])
def test_switch_to_deploy_equals_eval(arch, size):
    """Deploy equals eval, with every FFN's pw2 + residual one oneDNN op (the binary overload)
    and the FFNs' and patch mergings' ReLU modules not run (fused into their convs)."""
    model = randomize_norms(SHViT(arch)).eval()
    x = torch.randn(1, 3, *size)
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
TINY = dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], partial_dims=[8, 12, 16])


def _tiny(**kwargs):
    torch.manual_seed(0)
    return randomize_norms(SHViT(TINY, **kwargs))


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
    from mmext.errors import ConfigError
    with pytest.raises(ConfigError, match='stride8'):
        SHViT(TINY, stride8='neck')


def test_stride8_onnx_at_two_sizes(tmp_path):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is needed for the ONNX check')
    model = _tiny(stride8='upsample', out_indices=(0, 1)).eval().switch_to_deploy()
    path = str(tmp_path / 's8.onnx')
    names = ['s8', 'l0', 'l1']
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(1, 3, 64, 64), path, input_names=['x'],
                          output_names=names, dynamo=False, opset_version=17,
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
