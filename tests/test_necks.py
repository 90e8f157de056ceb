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
def test_every_parameter_gets_a_gradient(num_outs, add_extra_convs):
    neck = TransConvFPN(CHANNELS, 8, num_trans_convs=2, num_outs=num_outs,
                        add_extra_convs=add_extra_convs, norm_cfg=dict(type='BN'))
    sum(o.mean() for o in neck(_backbone_maps(128, 128))).backward()
    assert all(p.grad is not None for p in neck.parameters())


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
