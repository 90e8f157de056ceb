import pytest
import torch

import mmext  # noqa: F401
from mmext.errors import ConfigError
from mmext.models import SHViT, TransConvFPN

CHANNELS = [16, 24, 32]


def _backbone_maps(h, w):
    """Maps shaped like SHViT's at strides 16/32/64 for an h x w image."""
    return [torch.randn(1, c, -(-h // s), -(-w // s)) for c, s in zip(CHANNELS, (16, 32, 64))]


@pytest.mark.parametrize('kwargs, strides', [
    (dict(num_trans_convs=2, num_outs=5), [4, 8, 16, 32, 64]),  # Mask R-CNN
    (dict(num_trans_convs=1, num_outs=5, add_extra_convs='on_input'), [8, 16, 32, 64, 128]),
    (dict(num_trans_convs=1, num_outs=5, add_extra_convs='on_output'), [8, 16, 32, 64, 128]),
    (dict(num_trans_convs=2, num_outs=4), [4, 8, 16, 32]),  # Semantic FPN
    (dict(num_trans_convs=2, num_outs=6), [4, 8, 16, 32, 64, 128]),
])
def test_levels_and_strides(kwargs, strides):
    neck = TransConvFPN(CHANNELS, 8, **kwargs)
    h, w = 256, 384
    outs = neck(_backbone_maps(h, w))
    assert len(outs) == len(strides)
    for out, stride in zip(outs, strides):
        assert out.shape == (1, 8, h // stride, w // stride)


def test_odd_sizes_keep_levels_consistent():
    neck = TransConvFPN(CHANNELS, 8, num_trans_convs=2, num_outs=5)
    outs = neck(_backbone_maps(801, 1203))
    sizes = [o.shape[-2:] for o in outs]
    # finer levels are exact doublings of the stride-16 map; coarser ones follow the backbone
    assert sizes[2] == (51, 76) and sizes[1] == (102, 152) and sizes[0] == (204, 304)
    assert sizes[3] == (26, 38) and sizes[4] == (13, 19)


@pytest.mark.parametrize('num_outs, add_extra_convs', [(4, False), (5, False), (5, 'on_input')])
def test_every_parameter_and_level_gets_a_gradient(num_outs, add_extra_convs):
    torch.manual_seed(0)
    neck = TransConvFPN(CHANNELS, 8, num_trans_convs=2, num_outs=num_outs,
                        add_extra_convs=add_extra_convs, norm_cfg=dict(type='BN'))
    neck.init_weights()
    maps = [m.requires_grad_() for m in _backbone_maps(128, 128)]
    outs = neck(maps)
    sum(o.square().mean() for o in outs).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for m in maps:  # every backbone level feeds the outputs
        assert m.grad.abs().sum() > 0


def _mmdet_fpn_twin(neck, **kwargs):
    """mmdet's FPN with the neck's weights (a TransConvFPN without transposed convs is an FPN)."""
    from mmdet.models.necks import FPN
    fpn = FPN(CHANNELS, 8, **kwargs)
    own = [m for m in neck.modules() if isinstance(m, torch.nn.Conv2d)]
    ref = [m for m in fpn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(own) == len(ref)
    order = list(neck.lateral_convs) + list(neck.fpn_convs) + list(neck.extra_convs)
    for mine, theirs in zip(order, ref):
        theirs.load_state_dict(mine.state_dict())
    return fpn


@pytest.mark.parametrize('kwargs', [
    dict(num_outs=5), dict(num_outs=3), dict(num_outs=5, add_extra_convs='on_input'),
    dict(num_outs=6, add_extra_convs='on_output', relu_before_extra_convs=True),
    dict(num_outs=4, start_level=1, add_extra_convs='on_input')])
def test_without_transposed_convs_it_is_mmdet_fpn(kwargs):
    pytest.importorskip('mmdet', reason='mmdet provides the reference FPN')
    torch.manual_seed(0)
    neck = TransConvFPN(CHANNELS, 8, num_trans_convs=0, **kwargs)
    neck.init_weights()
    with torch.no_grad():
        for p in neck.parameters():
            p.normal_(std=0.2)
    fpn = _mmdet_fpn_twin(neck, **kwargs)
    maps = _backbone_maps(97, 131)
    with torch.no_grad():
        outs, ref = neck(maps), fpn(maps)
    assert len(outs) == len(ref) == kwargs['num_outs']
    for a, b in zip(outs, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_transposed_levels_come_from_the_finest_merged_lateral():
    torch.manual_seed(0)
    neck = TransConvFPN(CHANNELS, 8, num_trans_convs=2, num_outs=5).eval()
    maps = _backbone_maps(97, 131)
    with torch.no_grad():
        for p in neck.parameters():
            p.normal_(std=0.2)
        outs = neck(maps)
        laterals = [conv(x) for conv, x in zip(neck.lateral_convs, maps)]
        for i in (2, 1):  # top-down: nearest upsampling and addition
            laterals[i - 1] = laterals[i - 1] + torch.nn.functional.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode='nearest')
        p8 = neck.trans_convs[0](laterals[0])
        p4 = neck.trans_convs[1](p8)
        expected = [neck.trans_fpn_convs[1](p4), neck.trans_fpn_convs[0](p8)] + [
            conv(x) for conv, x in zip(neck.fpn_convs, laterals)]
    assert len(outs) == 5
    for a, b in zip(outs, expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ConfigError, match='add_extra_convs'):
        TransConvFPN(CHANNELS, 8, num_outs=5, add_extra_convs='on_nothing')
    with pytest.raises(ConfigError, match='in_channels'):
        TransConvFPN(CHANNELS, 8, num_outs=5)(_backbone_maps(64, 64)[:2])


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_behind_shvit_from_registry(scope):
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    backbone = registry.build(dict(type='SHViT', arch='s1'))
    neck = registry.build(dict(type='TransConvFPN', in_channels=[128, 224, 320], out_channels=16,
                               num_outs=4, num_trans_convs=2))
    outs = neck(backbone(torch.randn(1, 3, 128, 160)))
    assert [o.shape[-2:] for o in outs] == [(32, 40), (16, 20), (8, 10), (4, 5)]
    assert isinstance(backbone, SHViT)
