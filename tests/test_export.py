"""ONNX export of every mmext backbone family: dynamic H/W, checked in ONNX Runtime; and
verify_onnx checked against references that do not come from the exported model itself."""
import os

import numpy as np
import pytest
import torch

import mmext  # noqa: F401
from mmext.errors import MmextError
from mmext.registry import MODELS
from mmext.deploy import export_backbone, export_onnx, ort_session, verify_onnx
from mmext.models.families import FAMILIES
from tests.helpers import randomize_norms

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

# Each family of the manifest (not read from the registry) at its smallest arch: a family that
# drops out of the registry fails test_every_family_has_a_round_trip.
ROUND_TRIP = [(f.name, f.smallest) for f in FAMILIES.values()]
# Traced at the first size, checked at both; at the second, stride-16 grids are odd (5x7).
SIZES = ((64, 64), (80, 112))


def backbone_families():
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if getattr(cls, 'arch_settings', None))


@torch.no_grad()
def randomize(model):
    """Non-trivial norms, layer scales, biases and attention-bias tables (all zero or ~0 at init,
    which would hide a wrong graph)."""
    randomize_norms(model)
    gen = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if 'attention_biases' in name:
            param.copy_(torch.randn(param.shape, generator=gen))
        elif param.dim() == 1 and name.endswith(('gamma', 'bias')):
            param.copy_(torch.rand(param.shape, generator=gen) * 0.5 + 0.5)
    return model


def test_every_family_has_a_round_trip():
    assert sorted(family for family, _ in ROUND_TRIP) == backbone_families()


@pytest.mark.parametrize('family,arch', ROUND_TRIP)
def test_onnx_round_trip(family, arch, tmp_path):
    cls = MODELS.get(family)
    assert cls is not None, f'{family} is not in the registry'
    model = randomize(cls(arch=arch)).eval().switch_to_deploy()
    path = str(tmp_path / f'{family}.onnx')
    info = export_backbone(family, arch, path, sizes=SIZES, model=model, tol=1e-4)
    assert info['max_rel_err'] < 1e-4
    assert set(info['errors']) == {'64x64', '80x112'}
    graph = onnx.load(path).graph
    assert [o.name for o in graph.output] == [f'level{i}' for i in model.out_indices]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ['batch', '', 'height', 'width']
    assert {op.domain: op.version for op in onnx.load(path).opset_import}[''] >= 17


class FrozenWidth(torch.nn.Module):
    """Takes a Python int from a traced shape: the graph then only works at the traced size."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.out_indices = (0, )

    def forward(self, x):
        half = int(x.shape[-1]) // 2
        return (self.conv(x)[..., :half], )


def test_frozen_shape_is_reported(tmp_path):
    with pytest.raises(MmextError, match='does not match PyTorch') as exc:
        export_backbone('Toy', 'x', str(tmp_path / 'toy.onnx'), sizes=((32, 32), (32, 48)),
                        model=FrozenWidth().eval())
    assert '32x48' in str(exc.value)
    assert 'test_export.py' in str(exc.value)  # the tracer warning names the line
    assert os.listdir(tmp_path) == []  # no graph and no temporary file left behind


class TinyConv(torch.nn.Module):
    """A 3x3 conv (padding 1) with fixed, seeded weights."""

    def __init__(self, seed=0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))

    def forward(self, x):
        return self.conv(x)


def numpy_conv3x3(x, weight, bias):
    """The same conv by hand: zero padding 1, sum over input channels and the 3x3 window."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w), dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, :, dy:dy + h, dx:dx + w]
            out += np.einsum('oc,nchw->nohw', weight[:, :, dy, dx], window)
    return out + bias[None, :, None, None]


class NumpyReference(torch.nn.Module):
    """A 'model' whose outputs are computed by :func:`numpy_conv3x3`, not by torch."""

    def __init__(self, conv):
        super().__init__()
        self.weight = conv.weight.detach().double().numpy()
        self.bias = conv.bias.detach().double().numpy()

    def forward(self, x):
        out = numpy_conv3x3(x.double().numpy(), self.weight, self.bias)
        return torch.from_numpy(out).float()


def test_onnx_graph_matches_a_hand_computed_conv(tmp_path):
    model = TinyConv().eval()
    path = str(tmp_path / 'conv.onnx')
    export_onnx(model, path, (1, 3, 8, 8))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    onnx_out = ort_session(path).run(None, {'input': x})[0]
    expected = numpy_conv3x3(x.astype(np.float64), NumpyReference(model.conv).weight,
                             NumpyReference(model.conv).bias)
    assert onnx_out.shape == (2, 4, 5, 7)
    assert np.abs(onnx_out - expected).max() / np.abs(expected).max() < 1e-5
    errors = verify_onnx(NumpyReference(model.conv), path, sizes=((8, 8), (6, 10)), batch=2)
    assert set(errors) == {'8x8', '6x10'}
    assert all(e['error'] is None and e['max_rel_err'] < 1e-5 for e in errors.values())


def test_verify_onnx_catches_a_graph_of_other_weights(tmp_path):
    """verify_onnx must compare ONNX Runtime's outputs, not PyTorch's with themselves."""
    path = str(tmp_path / 'conv.onnx')
    export_onnx(TinyConv(seed=0).eval(), path, (1, 3, 8, 8))
    same = verify_onnx(TinyConv(seed=0), path, sizes=((8, 8), ))
    other = verify_onnx(TinyConv(seed=1), path, sizes=((8, 8), ))
    assert same['8x8']['max_rel_err'] < 1e-5
    assert other['8x8']['error'] is None and other['8x8']['max_rel_err'] > 0.1


def test_verify_onnx_reports_other_shapes(tmp_path):
    path = str(tmp_path / 'conv.onnx')
    export_onnx(TinyConv().eval(), path, (1, 3, 8, 8), dynamic=False)
    errors = verify_onnx(TinyConv(), path, sizes=((8, 8), (8, 12)))
    assert errors['8x8']['max_rel_err'] < 1e-5
    assert errors['8x12']['error'] and errors['8x12']['max_rel_err'] == float('inf')
