"""What every backbone family shares: argument errors that say what to fix, and building from
mmdet's and mmseg's registries under the plain and the ``mmext.`` name."""
import pytest

import mmext  # noqa: F401  (registers into mmdet and mmseg)
from mmext.errors import ConfigError
from mmext.models.families import FAMILIES


def _bad_arguments():
    for name, fam in FAMILIES.items():
        bad_arch, stages = fam.unknown_arch, fam.num_stages
        yield name, dict(arch=bad_arch), f"Unknown {name} arch '{bad_arch}'"
        yield name, dict(arch=dict(embed_dims=[1] * stages)), 'needs the keys'
        yield name, dict(out_indices=(0, stages)), 'out_indices'
        yield name, dict(out_indices=()), 'out_indices'
        yield name, dict(out_indices=(stages - 2, -2)), 'repeats'
        yield name, dict(frozen_stages=stages), 'frozen_stages'


@pytest.mark.parametrize('family, kwargs, match', list(_bad_arguments()))
def test_bad_arguments_raise_clear_errors(family, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FAMILIES[family].cls(**kwargs)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('prefix', ['', 'mmext.'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_builds_from_downstream_registries(family, prefix, scope):
    """The smallest arch, the last two stages (their channels, as the manifest has them)."""
    fam = FAMILIES[family]
    out_indices = (fam.num_stages - 2, fam.num_stages - 1)
    registry = pytest.importorskip(f'{scope}.registry').MODELS
    model = registry.build(dict(type=prefix + family, arch=fam.smallest, out_indices=out_indices))
    assert isinstance(model, fam.cls) and model.out_indices == out_indices
    assert model.out_channels == [fam.archs[fam.smallest].dims[i] for i in out_indices]
