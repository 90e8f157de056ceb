"""The engines of the formats benchmark (:mod:`mmext.benchmark.formats`): one object per format
that runs the network on a preprocessed batch, built here -- the eager PyTorch module, the exported
file through :class:`~mmext.deploy.detector_runtime.DetectorSession` on ONNX Runtime or OpenVINO,
the int8 files quantized first (:mod:`mmext.deploy.detector_quantize`), and anchor files another
exporter wrote -- or a ``skipped``/``failed`` row saying why not.
"""
import os
import os.path as osp

import numpy as np

from mmext.deploy.runners import NO_BF16, module_version
from mmext.errors import ConfigError, MmextError
from mmext.utils import error_line

LATENCY_ONLY = 'ok (latency only)'
NO_DEPLOY = 'skipped: pip install mmext[deploy] (onnxruntime, onnx)'
NO_OPENVINO = 'skipped: pip install mmext[openvino]'
NO_NNCF = 'skipped: pip install mmext[openvino] nncf (NNCF quantizes for OpenVINO)'


class Engine:
    """The network of one format: ``infer(batch) -> (dets, labels)`` numpy; ``close()``."""

    def __init__(self, infer, close=None, size_mb=None, note=None, path=None, module=None):
        self.infer = infer
        self.close = close or (lambda: None)
        self.size_mb = size_mb
        self.note = note
        self.path = path  # the file a runtime runs (profiled by formats_profile)
        self.module = module  # the eager module (torch formats)


def file_mb(path):
    """Size in MB (10^6 bytes) of a file, or of all files in a folder."""
    if str(path).lower().endswith('.xml'):  # OpenVINO IR: the .xml and its .bin
        from mmext.deploy.detector_openvino import ir_files
        return round(sum(osp.getsize(f) for f in ir_files(path) if osp.exists(f)) / 1e6, 2)
    if osp.isdir(path):
        return round(sum(osp.getsize(osp.join(d, f)) for d, _, files in os.walk(path)
                         for f in files) / 1e6, 2)
    return round(osp.getsize(path) / 1e6, 2)


def module_mb(module):
    """Bytes of a module's parameters and buffers, in MB."""
    total = sum(t.numel() * t.element_size() for t in module.parameters())
    total += sum(t.numel() * t.element_size() for t in module.buffers())
    return round(total / 1e6, 2)


def torch_engine(wrapper, precision):
    """The exported module (:class:`DetectorWrapper`) eagerly; ``bf16``: a copy with backbone
    and neck in bf16 (:class:`mmext.engine.precision.Bf16Module`), the rest float32."""
    import copy
    import torch
    module = wrapper
    note = ('eager PyTorch, backbone fused (switch_to_deploy), decode + NMS as exported; size: '
            'the module\'s parameters and buffers, unused ones included')
    if precision == 'bf16':
        from mmext.engine.precision import Bf16Module
        module = copy.deepcopy(wrapper)
        for name in ('backbone', 'neck'):
            part = getattr(module.detector, name, None)
            if isinstance(part, torch.nn.Module):
                setattr(module.detector, name, Bf16Module(part))
        note = 'backbone and neck bf16 (autocast, channels-last); heads, decode, NMS fp32'
    module.eval()

    def infer(x):
        with torch.inference_mode():
            dets, labels = module(torch.from_numpy(x))
        return dets.float().numpy(), labels.numpy()

    return Engine(infer, size_mb=module_mb(module), note=note, module=module)


def runtime_engine(path, backend, precision, threads, note=None):
    """An exported file through :class:`~mmext.deploy.detector_runtime.DetectorSession`
    (``'int8'``: a file quantized here, QDQ nodes, run as it is)."""
    from mmext.deploy.detector_runtime import DetectorSession
    session = DetectorSession(path, backend=backend, precision=precision, threads=threads)
    if precision == 'int8' and not getattr(session, 'quantized', True):
        session.close()
        raise MmextError(f'{path!r} holds no int8 (QDQ) nodes: the quantizer left it float.')
    return Engine(session.run, session.close, size_mb=file_mb(path), note=note, path=path)


def format_skip(fmt):
    """``'skipped: ...'`` when ``fmt`` cannot run here, else ``None``."""
    from mmext.compat import native_bf16
    engine, precision = fmt.split('-')
    if engine != 'torch' and (module_version('onnxruntime') is None
                              or module_version('onnx') is None):
        return NO_DEPLOY
    if engine == 'openvino' and module_version('openvino') is None:
        return NO_OPENVINO
    if fmt == 'openvino-int8' and module_version('nncf') is None:
        return NO_NNCF
    if precision == 'bf16' and not native_bf16('cpu'):
        return f'skipped: {NO_BF16}'
    return None


def new_row(config, model, fmt, status='ok'):
    engine_name, precision = fmt.split('-')
    return dict(config=str(config), model=model, format=engine_name, precision=precision,
                status=status, size_mb=None, bbox_ap=None, ap_delta=None, preprocess_ms=None,
                inference_ms=None, postprocess_ms=None, fps=None)


def failed_cases(config, model, formats, exc):
    """``failed`` rows of every format for a model that could not be built or exported."""
    return [(new_row(config, model, fmt, f'failed: {error_line(exc, 200)}'), None)
            for fmt in formats]


def model_cases(config, model_name, wrapper, onnx_path, formats, threads, calib_batches,
                work_dir, progress=print):
    """``[(row, Engine or None)]`` for one exported detector in each of ``formats``; a format
    that cannot run here is a ``skipped`` row, one that fails to build a ``failed`` row."""
    stem = osp.splitext(osp.basename(onnx_path))[0]
    cases = []
    for fmt in formats:
        row = new_row(config, model_name, fmt)
        skip = format_skip(fmt)
        if skip:
            row['status'] = skip
            cases.append((row, None))
            continue
        progress(f'preparing {model_name} {fmt}')
        try:
            engine = _build(fmt, wrapper, onnx_path, threads, calib_batches, work_dir, stem)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001  (a row says what failed)
            row['status'] = f'failed: {error_line(exc, 200)}'
            cases.append((row, None))
            continue
        row.update(size_mb=engine.size_mb, note=engine.note)
        if engine.path:
            row['file'] = engine.path
        cases.append((row, engine))
    return cases


def _build(fmt, wrapper, onnx_path, threads, calib_batches, work_dir, stem):
    from mmext.deploy import detector_quantize
    if fmt.startswith('torch'):
        return torch_engine(wrapper, fmt.split('-')[1])
    calib = f'calibrated on {len(calib_batches)} images'
    if fmt == 'onnxruntime-fp32':
        return runtime_engine(onnx_path, 'onnxruntime', 'fp32', threads, 'the exported file')
    if fmt == 'onnxruntime-int8':
        path = osp.join(work_dir, f'{stem}.ort-int8.onnx')
        info = detector_quantize.quantize_ort(onnx_path, path, calib_batches)
        return runtime_engine(path, 'onnxruntime', 'int8', threads,
                              f'quantize_static QDQ per-channel, {calib}; {info["note"]}')
    if fmt == 'openvino-fp32':
        return runtime_engine(onnx_path, 'openvino', 'fp32', threads,
                              'the exported .onnx read by OpenVINO, f32 hint')
    if fmt == 'openvino-bf16':
        return runtime_engine(onnx_path, 'openvino', 'bf16', threads,
                              'the exported .onnx, INFERENCE_PRECISION_HINT=bf16')
    if fmt == 'openvino-int8':
        from mmext.deploy.detector_openvino import quantize_openvino
        path = osp.join(work_dir, f'{stem}.nncf-int8.xml')
        info = quantize_openvino(onnx_path, path, calib_batches)
        return runtime_engine(path, 'openvino', 'int8', threads,
                              f'NNCF quantize (OpenVINO IR), {calib}; {info["note"]}')
    raise ConfigError(f'unknown format {fmt!r}')


def _is_openvino_anchor(path):
    path = str(path)
    return osp.isdir(path) or path.lower().endswith('.xml')


def anchor_cases(path, shape, batch, threads):
    """The anchor rows of one file: an ONNX file runs in ONNX Runtime (fp32); an OpenVINO
    model under the f32 and the bf16 hint (bf16 a ``skipped`` row without native bf16), as
    the detectors' own OpenVINO rows."""
    if not _is_openvino_anchor(path):
        return [anchor_case(path, shape, batch, threads)]
    cases = [anchor_case(path, shape, batch, threads, 'fp32')]
    skip = format_skip('openvino-bf16')
    if skip and module_version('openvino') is not None:
        row = dict(cases[0][0], precision='bf16', status=skip, inference_ms=None, fps=None)
        cases.append((row, None))
    else:
        cases.append(anchor_case(path, shape, batch, threads, 'bf16'))
    return cases


def anchor_case(path, shape, batch, threads, precision='fp32'):
    """``(row, Engine)`` of a file another exporter wrote (Ultralytics' ``.onnx``, or an
    OpenVINO ``.xml`` / ``*_openvino_model`` folder, compiled with ``precision``'s hint), timed
    for latency only."""
    path = str(path)
    name = osp.basename(path.rstrip('/'))
    row = dict(config=path, model=name, format=None, precision=precision, status=LATENCY_ONLY,
               size_mb=None, bbox_ap=None, ap_delta=None, preprocess_ms=None,
               inference_ms=None, postprocess_ms=None, fps=None,
               note='anchor: latency of the file as its exporter wrote it, no AP')
    try:
        if not osp.exists(path):
            raise ConfigError(f'--anchor-onnx {path!r} does not exist')
        xml = path
        if osp.isdir(path):
            found = sorted(f for f in os.listdir(path) if f.endswith('.xml'))
            if not found:
                raise ConfigError(f'{path!r} has no OpenVINO .xml file')
            xml = osp.join(path, found[0])
        nms = graph_has_nms(xml)
        if nms is not None:
            # two exports of one model (with and without NMS) stay two rows
            row['model'] = name + ('+nms' if nms else '')
            row['note'] = ('anchor: latency of the file as its exporter wrote it ('
                           + ('NMS in the graph' if nms else 'no decoding/NMS in the graph')
                           + '), no AP')
        if xml.endswith('.xml'):
            row['format'] = 'openvino'
            if module_version('openvino') is None:
                row['status'] = NO_OPENVINO
                return row, None
            engine = _openvino_raw(xml, threads, precision, (batch, 3) + tuple(shape))
        else:
            row['format'] = 'onnxruntime'
            if module_version('onnxruntime') is None:
                row['status'] = NO_DEPLOY
                return row, None
            engine = _ort_raw(path, threads)
        x = np.random.RandomState(0).rand(batch, 3, *shape).astype(np.float32)
        engine.infer(x)  # a shape the file cannot take fails here, once
        engine.infer = lambda _x, run=engine.infer, x=x: run(x)
        engine.size_mb = file_mb(path)
        row['size_mb'] = engine.size_mb
        return row, engine
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001
        row['status'] = f'failed: {error_line(exc, 200)}'
        return row, None


def graph_has_nms(path):
    """Whether an ONNX or OpenVINO ``.xml`` file holds a NonMaxSuppression op (Ultralytics
    exports it with ``nms=True``); None when the file's library is not installed."""
    try:
        if str(path).lower().endswith('.xml'):
            import openvino as ov
            ops = ov.Core().read_model(path).get_ops()
            return any(op.get_type_name().startswith('NonMaxSuppression') for op in ops)
        import onnx
        graph = onnx.load(path, load_external_data=False).graph
        return any(node.op_type == 'NonMaxSuppression' for node in graph.node)
    except ImportError:
        return None


def _ort_raw(path, threads):
    from mmext.deploy.export import ort_session
    session = ort_session(str(path), threads=threads)
    name = session.get_inputs()[0].name
    return Engine(lambda x: session.run(None, {name: x}))


def _openvino_raw(path, threads, precision='fp32', input_shape=None):
    """An OpenVINO model as an engine; ``input_shape``: reshaped to it first (Ultralytics'
    exports are static 1 x 3 x 640 x 640: OpenVINO reshapes them to another batch)."""
    from mmext.deploy.detector_runtime import compile_openvino
    request = compile_openvino(path, precision, threads, input_shape).create_infer_request()
    return Engine(lambda x: request.infer({0: x}))
