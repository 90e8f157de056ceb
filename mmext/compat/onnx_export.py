"""Which ONNX exporters the running torch has, and one call that uses them.

torch 2.0-2.4: ``torch.onnx.export`` is the TorchScript-based exporter (no ``dynamo`` argument).
torch 2.5-2.8: it takes ``dynamo=`` (default ``False``); torch >= 2.9 defaults to ``dynamo=True``
(the ``torch.export``-based exporter, which needs ``onnxscript``) and keeps the TorchScript one
behind ``dynamo=False`` (in ``torch.onnx._internal.torchscript_exporter``).

The TorchScript exporter of torch < 2.5 writes an ``nn.LayerNorm`` without affine part (what
deploy mode leaves after folding the affine into the next linear) as a ``LayerNormalization``
node with an empty ``Scale`` input, which the ONNX checker refuses (seen on torch 2.1.2); there
such norms get a ones weight and a zero bias for the export (same outputs).
"""
import contextlib
import importlib
import inspect

import torch
import torch.nn as nn

from mmext.compat.torch_ops import TORCH_VERSION


def _export_takes_dynamo():
    try:
        return 'dynamo' in inspect.signature(torch.onnx.export).parameters
    except (TypeError, ValueError):
        return False


def has_torchscript_exporter():
    """Whether ``torch.onnx.export`` can still run the TorchScript-based exporter."""
    for name in ('torch.onnx._internal.torchscript_exporter.utils', 'torch.onnx.utils'):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, '_export'):
            return True
    return False


def has_dynamo_exporter():
    """Whether ``torch.onnx.export(..., dynamo=True)`` exists here (torch >= 2.5)."""
    return _export_takes_dynamo()


@contextlib.contextmanager
def _layer_norms_with_weight(model):
    """Give every affine-less ``nn.LayerNorm`` of ``model`` a ones weight and a zero bias within
    the block."""
    plain = [m for m in model.modules()
             if isinstance(m, nn.LayerNorm) and m.weight is None and m.bias is None]
    ref = next(model.parameters(), None)
    like = dict(dtype=getattr(ref, 'dtype', None), device=getattr(ref, 'device', None))
    for m in plain:
        # a bias too: ONNX Runtime's SkipLayerNormFusion crashes on a LayerNormalization without
        # one after an Add (ONNX Runtime 1.32, EfficientFormer-L1 exported by torch 2.1.2)
        m.weight = nn.Parameter(torch.ones(m.normalized_shape, **like), requires_grad=False)
        m.bias = nn.Parameter(torch.zeros(m.normalized_shape, **like), requires_grad=False)
    try:
        yield
    finally:
        for m in plain:
            m.weight = m.bias = None


def onnx_export(model, args, path, exporter='torchscript', **kwargs):
    """``torch.onnx.export`` with the chosen exporter (``'torchscript'`` or ``'dynamo'``)."""
    if exporter == 'dynamo':
        if not has_dynamo_exporter():
            raise RuntimeError(f'the torch.export-based ONNX exporter needs torch >= 2.5 '
                               f'(this is {torch.__version__}); use the TorchScript exporter')
        return torch.onnx.export(model, args, path, dynamo=True, external_data=False, **kwargs)
    if _export_takes_dynamo():
        return torch.onnx.export(model, args, path, dynamo=False, **kwargs)
    fix = _layer_norms_with_weight(model) if TORCH_VERSION < (2, 5) else contextlib.nullcontext()
    with fix:
        return torch.onnx.export(model, args, path, **kwargs)
