"""int8 versions of an exported detector (``tools/export_detector.py``'s file), calibrated on
images through :func:`mmext.deploy.detector_runtime.preprocess`, with what must stay exact in
float.

* :func:`float_part` -- the nodes that stay float: the heads' last products (the convolutions
  whose outputs are scores and box distances; nothing multiplies after them) and everything
  downstream of them -- priors, box decoding, ``nms_pre``/``score_thr`` filtering, NMS and the
  gather of the kept rows. Found from the graph's structure, not from node names.
* :func:`quantize_ort` -- ONNX Runtime static quantization (``quantize_static``: QDQ, per-channel
  int8 weights, uint8 activations, MinMax ranges) of the convolutions and matrix products outside
  :func:`float_part` (``nodes_to_exclude``).

It writes an ``.onnx`` file that keeps the fp32 file's ``mmext`` metadata, so
:class:`~mmext.deploy.detector_runtime.DetectorSession` runs it like any export. OpenVINO's int8
(NNCF, OpenVINO IR) is :mod:`mmext.deploy.detector_openvino`.
"""
import os
import os.path as osp

import numpy as np

from mmext.deploy.quantize import QUANT_OPS, _quiet_root_logger
from mmext.errors import ConfigError, MmextError

METADATA_KEY = 'mmext'


def _load(path_or_model):
    import onnx
    if isinstance(path_or_model, (str, os.PathLike)):
        return onnx.load(str(path_or_model), load_external_data=False)
    return path_or_model


def last_products(count, after, is_product):
    """``(last, downstream)`` indices of a topologically ordered graph of ``count`` nodes:
    the product nodes with no product anywhere downstream, and every node downstream of them
    (ascending). ``after(i)``: the indices of node ``i``'s consumers; ``is_product[i]``.
    Shared by the ONNX graph here and OpenVINO's (:mod:`mmext.deploy.detector_openvino`)."""
    # a backward sweep sees consumers first
    below = [False] * count
    for i in range(count - 1, -1, -1):
        below[i] = any(is_product[c] or below[c] for c in after(i))
    last = [i for i in range(count) if is_product[i] and not below[i]]
    seen, stack = set(), [c for i in last for c in after(i)]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(after(i))
    return last, sorted(seen)


def float_part(model, products=QUANT_OPS):
    """``(last_products, downstream)``: names of the graph's last product nodes (``products`` op
    types with no product anywhere downstream: the heads' output convolutions) and of every node
    downstream of them (decoding, filtering, NMS), in graph order."""
    graph = _load(model).graph
    nodes = list(graph.node)
    consumers = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)

    def after(i):
        return [c for out in nodes[i].output for c in consumers.get(out, ())]

    last, downstream = last_products(len(nodes), after,
                                     [n.op_type in products for n in nodes])
    return [nodes[i].name for i in last], [nodes[i].name for i in downstream]


def describe_float_part(last, downstream):
    """One line for a benchmark row: what stayed float."""
    return (f'float: the heads\' {len(last)} output convs and the {len(downstream)} nodes after '
            'them (priors, box decoding, score filter, NMS)')


def copy_metadata(src, dst_model):
    """Put ``src``'s ``metadata_props`` (the ``mmext`` entry) into the ONNX model ``dst_model``."""
    src = _load(src)
    keep = {p.key: p.value for p in src.metadata_props}
    for prop in list(dst_model.metadata_props):
        if prop.key in keep:
            dst_model.metadata_props.remove(prop)
    for key, value in keep.items():
        entry = dst_model.metadata_props.add()
        entry.key, entry.value = key, value
    return dst_model


class BatchReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a list of ``N x 3 x H x W`` batches (each
    its own size: the images are preprocessed one by one)."""

    def __init__(self, batches, input_name):
        self.batches, self.input_name = list(batches), input_name
        self.rewind()

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter([{self.input_name: np.ascontiguousarray(b, dtype=np.float32)}
                           for b in self.batches])


def _check_batches(batches):
    batches = [np.asarray(b, dtype=np.float32) for b in batches]
    if not batches or any(b.ndim != 4 or b.shape[1] != 3 for b in batches):
        raise ConfigError('int8 calibration needs a non-empty list of N x 3 x H x W batches '
                          '(images through detector_runtime.preprocess).')
    return batches


def _write_onnx(model, path):
    import onnx
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def quantize_ort(fp32_path, int8_path, batches, per_channel=True, exclude_float_part=True):
    """ONNX Runtime static int8 (QDQ) of the exported detector ``fp32_path`` into ``int8_path``,
    calibrated (MinMax) on ``batches``; the :func:`float_part` stays float unless
    ``exclude_float_part`` is false. ``int8_path`` appears only when complete (quantized under a
    temporary name). Returns the settings and what stayed float."""
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MmextError('int8 quantization needs onnxruntime and onnx: '
                         '`pip install mmext[deploy]`.') from None
    batches = _check_batches(batches)
    fp32_path, int8_path = str(fp32_path), str(int8_path)
    prepared = osp.splitext(int8_path)[0] + '.prep.onnx'
    quantized = f'{osp.splitext(int8_path)[0]}.tmp{os.getpid()}.onnx'
    try:
        try:
            quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001  (pre-processing is an optimisation only)
            prepared = fp32_path
        graph_model = onnx.load(prepared, load_external_data=False)
        input_name = graph_model.graph.input[0].name
        last, downstream = float_part(graph_model)
        exclude = (last + downstream) if exclude_float_part else []
        with _quiet_root_logger():
            quantize_static(prepared, quantized, BatchReader(batches, input_name),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=list(QUANT_OPS), nodes_to_exclude=exclude)
        _write_onnx(copy_metadata(fp32_path, onnx.load(quantized)), int8_path)
    finally:
        for path in ({prepared, quantized} - {fp32_path}):
            if osp.exists(path):
                os.remove(path)
    return dict(tool='onnxruntime.quantization.quantize_static', quant_format='QDQ',
                per_channel=per_channel, calib_method='minmax', calib_batches=len(batches),
                float_last=last if exclude_float_part else [],
                float_nodes=len(exclude),
                note=describe_float_part(last, downstream) if exclude_float_part else
                'nothing kept float')


def quantized_products(model):
    """``{node name: op_type}`` of the product nodes whose weight input comes through a
    ``DequantizeLinear`` (int8 weights) -- what a quantized graph runs in int8."""
    graph = _load(model).graph
    dq_outputs = {o for n in graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
    return {n.name: n.op_type for n in graph.node
            if n.op_type in QUANT_OPS and len(n.input) > 1 and n.input[1] in dq_outputs}


def quantized_float_part(model, fp32_model):
    """Names of :func:`float_part` nodes of ``fp32_model`` that in ``model`` (its int8 version)
    take a dequantized input: empty when the float part was kept float."""
    last, downstream = float_part(fp32_model)
    watched = set(last) | set(downstream)
    graph = _load(model).graph
    dq_outputs = {o for n in graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
    return sorted(n.name for n in graph.node
                  if n.name in watched and any(i in dq_outputs for i in n.input))
