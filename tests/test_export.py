"""ONNX export of every mmext backbone family: dynamic H/W, checked in ONNX Runtime."""
import pytest
import torch

import mmext  # noqa: F401
from mmext.errors import MmextError
from mmext.registry import MODELS
from mmext.deploy import export_backbone
from tests.helpers import randomize_norms

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

SMALLEST = {'SHViT': 's1', 'EfficientFormer': 'l1', 'EfficientFormerV2': 's0', 'EdgeViT': 'xxs'}
# Traced at the first size, checked at both; at the second, stride-16 grids are odd (5x7).
SIZES = ((64, 64), (80, 112))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box more threads only spin against each other."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


def test_all_families_are_listed():
    assert 'SHViT' in backbone_families()


@pytest.mark.parametrize('family', backbone_families())
def test_onnx_round_trip(family, tmp_path):
    cls = MODELS.get(family)
    arch = SMALLEST.get(family, next(iter(cls.arch_settings)))
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
