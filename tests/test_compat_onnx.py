"""mmext.compat.onnx_export: the running torch's exporters, and a graph every torch writes right."""
import pytest
import torch
import torch.nn as nn

from mmext.compat import onnx_export as ox

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')


class AddNorm(nn.Module):
    """``LayerNorm(x + y)`` without affine part: what deploy mode leaves in EfficientFormer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8, elementwise_affine=False)

    def forward(self, x):
        return self.norm(x + self.fc(x))


def test_exporters_of_the_running_torch():
    assert ox.has_torchscript_exporter()  # torch 2.0 ... 2.13 all still have it
    assert ox.has_dynamo_exporter() == (ox.TORCH_VERSION >= (2, 5))
    if not ox.has_dynamo_exporter():
        with pytest.raises(RuntimeError, match='needs torch >= 2.5'):
            ox.onnx_export(AddNorm(), (torch.randn(2, 8), ), 'unused.onnx', exporter='dynamo')


def test_affine_less_layer_norm_exports_checks_and_runs_optimized(tmp_path):
    model = AddNorm().eval()
    x = torch.randn(3, 5, 8)
    path = str(tmp_path / 'addnorm.onnx')
    ox.onnx_export(model, (x, ), path, input_names=['x'], opset_version=17)
    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])  # all optimizations
    out = session.run(None, {'x': x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-5)
    assert model.norm.weight is None and model.norm.bias is None  # restored after the export


def test_layer_norm_workaround_gives_weights_only_within_the_block():
    model = AddNorm()
    with ox._layer_norms_with_weight(model):
        assert torch.equal(model.norm.weight, torch.ones(8))
        assert torch.equal(model.norm.bias, torch.zeros(8))
    assert model.norm.weight is None and model.norm.bias is None

