"""OpenVINO int8 of an exported detector: NNCF's post-training quantization on OpenVINO's own
model of the ``.onnx`` file, written as OpenVINO IR (``.xml`` + ``.bin``) that keeps the
export's ``mmext`` metadata (in the model's ``rt_info``), so that
:class:`~mmext.deploy.detector_runtime.DetectorSession` runs it like the ``.onnx``.

Why this path and not NNCF's ONNX backend (QDQ ``.onnx``): on the demo-trained RTMDet + SHViT-S1
(AMD EPYC Zen 4) the ONNX-backend file lost 0.09 bbox AP in OpenVINO (0.598 vs 0.688; the same
file in ONNX Runtime: 0.686), this one 0.008 or less; and ``openvino.convert_model`` turns
``x * sigmoid(x)`` into ``Swish``, which the CPU plugin fuses with the int8 convolutions and their
requantization: 41.7 vs 46.2 ms at 640 x 640 (1 thread) against ``read_model``'s graph.

As for ONNX Runtime (:mod:`mmext.deploy.detector_quantize`) the heads' output convolutions and
everything after them (priors, decoding, top-k, score filter, NMS) stay float: here found on the
OpenVINO graph itself (:func:`float_part`), so names that conversion changed cannot leak.

A graph with attention (``ScaledDotProductAttention`` or a ``MatMul`` of two activations:
EfficientFormerV2, EdgeViT, SHViT; see :func:`attention_products`) is quantized in NNCF's
transformer mode, which also makes the attention's products int8: EfficientFormerV2-S0
RTMDet-tiny 103.7 -> 93.4 ms, EdgeViT-XXS RTMDet-tiny 110.0 -> 102.4 ms at 640 x 640 (1 thread,
AMD EPYC Zen 4, interleaved; SHViT-S1's, whose attention is small, 38.9 -> 39.3).
Convolution-only graphs keep NNCF's default mode (the transformer one was 3% slower on mmdet's
RTMDet-tiny).
"""
import json
import logging
import os
import os.path as osp

import numpy as np

from mmext.deploy.detector_quantize import _check_batches, last_products
from mmext.deploy.detector_runtime import METADATA_KEY, read_metadata
from mmext.errors import ConfigError, MmextError
from mmext.utils import quiet

NNCF_EXTRA = '`pip install mmext[openvino]` (or `pip install openvino nncf`)'
#: NNCF modes :func:`quantize_openvino` takes (``'auto'``: by :func:`attention_products`)
MODEL_TYPES = ('auto', 'cnn', 'transformer')
#: OpenVINO op types that carry the multiply-adds (what int8 is for)
PRODUCTS = ('Convolution', 'GroupConvolution', 'ConvolutionBackpropData', 'MatMul')


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise MmextError(f'OpenVINO is not installed: {NNCF_EXTRA}.') from None
    return ov


def _has_variable_input(op):
    """Whether a product op multiplies activations (not only constants: weight subgraphs)."""
    return any(v.get_source_output().get_node().get_type_name() != 'Constant'
               for v in op.inputs()[:1])


def _is_constant(output, depth=4):
    """Whether an op output is a constant, also through a few shape/type ops on one."""
    node = output.get_node()
    if node.get_type_name() == 'Constant':
        return True
    if depth and node.get_type_name() in ('Convert', 'Transpose', 'Reshape', 'Unsqueeze',
                                          'Squeeze', 'FakeQuantize'):
        return _is_constant(node.inputs()[0].get_source_output(), depth - 1)
    return False


def attention_products(model):
    """Friendly names of the attention ops of an ``openvino.Model``: ``ScaledDotProductAttention``
    (what ``convert_model`` fuses ``softmax(q k^T) v`` into) and the ``MatMul`` ops with no
    constant operand (attention's ``q k^T`` and ``attn v`` as ``read_model`` keeps them, or
    where talking heads sit between them; also a product whose operand the graph computes from
    weights, as EdgeViT's folded local propagation); a linear layer's ``MatMul`` has a constant
    operand."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == 'ScaledDotProductAttention'
            or (op.get_type_name() == 'MatMul'
                and not any(_is_constant(v.get_source_output()) for v in op.inputs()))]


def float_part(model):
    """``(last, downstream)``: friendly names of the model's last product ops (no product
    downstream: the heads' output convolutions) and of every op after them, for an
    ``openvino.Model`` (:func:`~mmext.deploy.detector_quantize.last_products` on its graph)."""
    ops = list(model.get_ordered_ops())  # topologically ordered
    index = {op.get_friendly_name(): i for i, op in enumerate(ops)}
    consumers = [[index[t.get_node().get_friendly_name()] for out in op.outputs()
                  for t in out.get_target_inputs()] for op in ops]
    is_product = [op.get_type_name() in PRODUCTS and _has_variable_input(op) for op in ops]
    last, downstream = last_products(len(ops), consumers.__getitem__, is_product)
    return ([ops[i].get_friendly_name() for i in last],
            [ops[i].get_friendly_name() for i in downstream
             if ops[i].get_type_name() not in ('Result', 'Constant')])


def quantized_ops(model):
    """``{friendly name: type}`` of the ops with a ``FakeQuantize`` feeding them (the int8
    ones), for an ``openvino.Model`` or an IR path."""
    if isinstance(model, (str, os.PathLike)):
        model = _openvino().Core().read_model(os.fspath(model))
    out = {}
    for op in model.get_ordered_ops():
        if any(v.get_source_output().get_node().get_type_name() == 'FakeQuantize'
               for v in op.inputs()):
            out[op.get_friendly_name()] = op.get_type_name()
    return out


def read_ir_metadata(path):
    """The ``mmext`` metadata text of an IR file, or ``None``."""
    ov = _openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # openvino's RuntimeError variants
        raise ConfigError(f'not an mmext detector export: {str(path)!r} is not an OpenVINO IR '
                          f'file ({type(exc).__name__}).') from None
    if not model.has_rt_info([METADATA_KEY]):
        return None
    return model.get_rt_info([METADATA_KEY]).astype(str)


def ir_files(xml):
    """The files an IR ``.xml`` consists of (``.xml`` and the ``.bin`` beside it)."""
    return [str(xml), osp.splitext(str(xml))[0] + '.bin']


def check_model_type(model_type):
    """``model_type`` if it is one of :data:`MODEL_TYPES`, else one :class:`ConfigError`."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f'unknown NNCF model type {model_type!r}; choose from '
                          f'{", ".join(MODEL_TYPES)}')
    return model_type


def quantize_openvino(fp32_path, int8_xml, batches, exclude_float_part=True, model_type='auto'):
    """NNCF post-training int8 of the exported detector ``fp32_path`` (``.onnx``) into the
    OpenVINO IR ``int8_xml``, calibrated on ``batches`` (``N x 3 x H x W`` float32, as
    :func:`~mmext.deploy.detector_runtime.preprocess` gives them); :func:`float_part` kept float
    unless ``exclude_float_part`` is false. ``model_type``: NNCF's ``'transformer'`` or
    ``'cnn'`` (its default) mode; ``'auto'``: transformer where the graph has
    :func:`attention_products`. Written to temporary names, renamed when complete.
    Returns the settings and what stayed float."""
    check_model_type(model_type)
    ov = _openvino()
    try:
        import nncf
    except ImportError:
        raise MmextError(f'NNCF is not installed: {NNCF_EXTRA}.') from None
    except Exception as exc:  # noqa: BLE001  (e.g. NNCF 3.4 beside torch 2.1: no torch.uint16)
        raise MmextError(f'NNCF cannot be imported here ({type(exc).__name__}: {exc}); install '
                         'an NNCF release that supports this torch.') from None
    if not str(int8_xml).lower().endswith('.xml'):
        raise ConfigError(f'the OpenVINO int8 file {str(int8_xml)!r} must end in .xml (its '
                          'weights go to the .bin beside it).')
    batches = [np.ascontiguousarray(b) for b in _check_batches(batches)]
    meta = read_metadata(fp32_path)
    model = ov.convert_model(str(fp32_path))
    last, downstream = float_part(model)
    names = (last + downstream) if exclude_float_part else []
    kwargs = dict(subset_size=len(batches))
    attention = attention_products(model)
    if model_type == 'auto':
        model_type = 'transformer' if attention else 'cnn'
    if model_type == 'transformer':
        kwargs['model_type'] = nncf.ModelType.TRANSFORMER
    if names:
        kwargs['ignored_scope'] = nncf.IgnoredScope(names=names, validate=False)
    with quiet(logging.getLogger('nncf'), stdout=True):
        quantized = nncf.quantize(model, nncf.Dataset(batches), **kwargs)
    quantized.set_rt_info(json.dumps(meta), [METADATA_KEY])
    xml, bin_ = ir_files(int8_xml)
    tmp_xml = f'{osp.splitext(xml)[0]}.tmp{os.getpid()}.xml'
    tmp_files = ir_files(tmp_xml)
    try:
        ov.save_model(quantized, tmp_xml, compress_to_fp16=False)  # float parts stay fp32
        os.replace(tmp_files[1], bin_)
        os.replace(tmp_files[0], xml)
    finally:
        for path in tmp_files:
            if osp.exists(path):
                os.remove(path)
    return dict(tool=f'nncf {getattr(nncf, "__version__", "?")} quantize (OpenVINO backend)',
                model_type=model_type, attention_products=len(attention),
                calib_batches=len(batches), float_last=last, float_nodes=len(names),
                note=_note(model_type, len(attention), len(last), len(downstream),
                           exclude_float_part))


def _note(model_type, attention, last, downstream, float_part_kept):
    mode = f'NNCF {model_type} mode'
    if model_type == 'transformer':
        mode += f' (the graph has {attention} attention products)'
    kept = (f"float: the heads' {last} output convs and the {downstream} ops after them (priors, "
            'box decoding, score filter, NMS)') if float_part_kept else 'nothing kept float'
    return f'{mode}; {kept}'
