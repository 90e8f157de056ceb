"""What every backbone family shares: argument errors that say what to fix, and building from
mmdet's and mmseg's registries under the plain and the ``mmext.`` name."""
import pytest

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.errors import ConfigError
from mmext.models import EdgeViT, EfficientFormer, EfficientFormerV2, SHViT

# class, an arch name it does not have, its number of stages, a registry build and its channels
FAMILIES = {
    'SHViT': (SHViT, 's9', 3, dict(arch='s1', out_indices=(1, 2)), [224, 320]),
    'EfficientFormer': (EfficientFormer, 'l2', 4, dict(arch='l1', out_indices=(1, 2)), [96, 224]),
    'EfficientFormerV2': (EfficientFormerV2, 's9', 4, dict(arch='s0', out_indices=(2, 3)),
                          [96, 176]),
    'EdgeViT': (EdgeViT, 'm', 4, dict(arch='xs', out_indices=(2, 3)), [240, 384]),
}


def _bad_arguments():
    for name, (_, bad_arch, stages, _, _) in FAMILIES.items():
        yield name, dict(arch=bad_arch), f"Unknown {name} arch '{bad_arch}'"
        yield name, dict(arch=dict(embed_dims=[1] * stages)), 'needs the keys'
        yield name, dict(out_indices=(0, stages)), 'out_indices'
        yield name, dict(out_indices=()), 'out_indices'
        yield name, dict(out_indices=(stages - 2, -2)), 'repeats'
        yield name, dict(frozen_stages=stages), 'frozen_stages'


@pytest.mark.parametrize('family, kwargs, match', list(_bad_arguments()))
def test_bad_arguments_raise_clear_errors(family, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FAMILIES[family][0](**kwargs)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('prefix', ['', 'mmext.'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_builds_from_downstream_registries(family, prefix, scope):
    cls, _, _, kwargs, channels = FAMILIES[family]
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    model = registry.build(dict(type=prefix + family, **kwargs))
    assert isinstance(model, cls) and model.out_indices == kwargs['out_indices']
    assert model.out_channels == channels
