"""Checkpoint layouts against the sources' REAL key names (tests/fixtures/checkpoint_keys.json).

The families and their layouts come from the family manifest (mmext.models.families), not from
the registry or the layout table, so a family or layout that goes missing fails a test.
"""
import pytest
import torch

import mmext  # noqa: F401
from mmext.checkpoints import LAYOUTS, family_of, load_pretrained
from mmext.models import EfficientFormer, EfficientFormerV2
from mmext.models.families import FAMILIES
from tests.helpers import randomize_norms
from tests.weights_helpers import (efficientformer_to_mmpretrain, efficientformer_v2_to_official,
                                   real_count, real_keys)

V1 = FAMILIES['EfficientFormer']
V2 = FAMILIES['EfficientFormerV2']


def test_every_family_has_its_layouts():
    assert {name: [l.name for l in fam.layouts] for name, fam in LAYOUTS.items()} == \
        {name: list(fam.layouts) for name, fam in FAMILIES.items()}
    for name, fam in FAMILIES.items():
        assert family_of(fam.cls) == name


def test_zoo_has_the_manifests_weights():
    """Every arch's canonical ImageNet weights (the manifest's URLs) are in the zoo, for the
    arch and family they fit; an arch without released weights is refused by name."""
    from mmext.checkpoints.zoo import ZOO, get_weights
    from mmext.errors import ConfigError
    released = {}
    for fam in FAMILIES.values():
        for arch, spec in fam.archs.items():
            name = fam.model_name(arch)
            if spec.weights is None:
                with pytest.raises(ConfigError, match='no released ImageNet weights'):
                    get_weights(name)
                continue
            released[name] = spec.weights
            weights = get_weights(name)
            assert (weights.family, weights.arch, weights.url) == (fam.name, arch, spec.weights)
            assert weights.layout in fam.layouts
    assert {k: w.url for k, w in ZOO.items()} == released


def _features(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _state_on_meta(cls, arch):
    with torch.device('meta'):
        return cls(arch).state_dict()


@pytest.fixture(scope='module')
def v2_s0():
    model = randomize_norms(EfficientFormerV2('s0'), seed=4).eval()
    for name, p in model.named_parameters():
        if name.endswith(('gamma', 'attention_biases')):
            torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 3, 64, 96)
    return model, x, _features(model, x)


def test_efficientformer_v2_authors_layout_has_the_authors_real_keys(v2_s0, tmp_path):
    model, x, ref = v2_s0
    state = efficientformer_v2_to_official(model.state_dict())
    real = real_keys('efficientformer_v2_authors', 's0')
    assert {k: tuple(v.shape) for k, v in state.items()} == real
    assert len(state) == real_count('efficientformer_v2_authors', 's0') == 573
    path = tmp_path / 'eformer_s_v2_0.pth'
    torch.save({'model': state, 'model_ema': state, 'epoch': 449}, path)
    fresh = EfficientFormerV2('s0')
    report = load_pretrained(fresh, str(path))
    assert report.layout == 'official' and report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(model.state_dict())
    for a, b in zip(ref, _features(fresh, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize('arch', list(V2.archs))
def test_efficientformer_v2_authors_key_count_per_arch(arch):
    state = {k: torch.zeros(v.shape) for k, v in _state_on_meta(EfficientFormerV2, arch).items()}
    assert len(efficientformer_v2_to_official(state)) == \
        real_count('efficientformer_v2_authors', arch)


@pytest.mark.parametrize('arch', list(V2.archs))
def test_efficientformer_v2_timm_layout_has_timms_real_keys(arch):
    """timm's names are mmext's: every backbone key of timm's model exists in mmext's with its
    shape (s0 by name), and the counts agree for every arch (timm adds the 9 classifier keys)."""
    own = {k: tuple(v.shape) for k, v in _state_on_meta(EfficientFormerV2, arch).items()}
    assert len(own) + 9 == real_count('efficientformer_v2_timm', arch)
    if arch == 's0':
        real = real_keys('efficientformer_v2_timm', 's0')
        backbone = {k: s for k, s in real.items() if not k.startswith(('norm.', 'head'))}
        assert backbone == own


@pytest.mark.parametrize('arch', list(V1.archs))
def test_efficientformer_mmpretrain_key_count_per_arch(arch):
    state = {k: torch.zeros(v.shape) for k, v in _state_on_meta(EfficientFormer, arch).items()}
    written = efficientformer_to_mmpretrain(state, V1.archs[arch].dims[-1])
    assert len(written) == real_count('efficientformer_mmpretrain', arch)
    if arch == 'l1':
        assert {k: tuple(v.shape) for k, v in written.items()} == \
            real_keys('efficientformer_mmpretrain', 'l1')
