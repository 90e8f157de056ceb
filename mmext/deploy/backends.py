"""Runners for modes that run an exported ONNX graph outside torch: ``onnxruntime``,
``onnxruntime_int8`` (static int8, :mod:`mmext.deploy.quantize`), ``openvino`` and
``openvino_bf16`` (OpenVINO's CPU plugin with fp32 or bf16 inference precision).

The graph is exported at the exact input shape (the runtimes plan for it) into a temporary
folder that :meth:`Runner.close` removes. ``info`` of each runner says what was done
(``export_s``, ``exporter``, threads, and for int8 the calibration settings and ``quantize_s``).
"""
import os.path as osp
import shutil
import tempfile
import time

import torch

from mmext.deploy.runners import Runner


def exported_runner(model, mode, x, threads=None, tmp_dir=None, calib=None):
    """A :class:`Runner` of ``model`` (already fused) exported to ONNX and run in ``mode``."""
    from mmext.deploy.export import export_onnx
    folder = tempfile.mkdtemp(prefix='mmext_bench_', dir=tmp_dir)
    try:
        path = osp.join(folder, 'model.onnx')
        model = model.cpu()
        start = time.perf_counter()
        exported = export_onnx(model, path, tuple(x.shape), dynamic=False)
        info = dict(export_s=round(time.perf_counter() - start, 2),
                    exporter=exported['exporter'])
        if mode == 'onnxruntime_int8':
            keep = getattr(model, 'int8_float_layers', ())
            path = _quantize(path, tuple(x.shape[-2:]), calib or {}, info, keep)
        feed = x.detach().cpu().contiguous().numpy()
        if mode.startswith('openvino'):
            run = _openvino(path, feed, threads, 'bf16' if mode.endswith('bf16') else 'f32', info)
        else:
            run = _onnxruntime(path, feed, threads, info)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Runner(run, lambda: shutil.rmtree(folder, ignore_errors=True), info=info)


def _quantize(path, size, calib, info, keep_float=()):
    from mmext.deploy.quantize import (DEFAULT_CALIB_IMAGES, calibration_images,
                                       quantize_onnx)
    start = time.perf_counter()
    images = calibration_images(size, calib.get('num') or DEFAULT_CALIB_IMAGES,
                                calib.get('folder'))
    int8_path = osp.splitext(path)[0] + '.int8.onnx'
    info.update(quantize_onnx(path, int8_path, images, method=calib.get('method', 'minmax'),
                              keep_float=keep_float))
    info['calib_source'] = calib.get('folder') or 'generated demo images'
    info['quantize_s'] = round(time.perf_counter() - start, 2)
    return int8_path


def _onnxruntime(path, feed, threads, info):
    from mmext.deploy.export import ort_session
    session = ort_session(path, threads=threads or 1)
    inputs = {session.get_inputs()[0].name: feed}
    info['ort_threads'] = int(threads or 1)

    def run():
        return [torch.from_numpy(o) for o in session.run(None, inputs)]

    return run


def _openvino(path, feed, threads, precision, info):
    import openvino as ov
    config = {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY',
              'NUM_STREAMS': '1', 'INFERENCE_NUM_THREADS': str(int(threads or 1))}
    compiled = ov.Core().compile_model(path, 'CPU', config)
    request = compiled.create_infer_request()
    n_out = len(compiled.outputs)
    info.update(openvino=ov.__version__.split('-')[0], ov_threads=int(threads or 1),
                ov_precision=precision)

    def run():
        request.infer({0: feed})
        return [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(n_out)]

    return run
