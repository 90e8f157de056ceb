"""This machine's GEMM peaks, measured in the benchmark's own run.

A backbone's speed means little without the speed the hardware reaches on the easiest workload
it has: one large square matrix product. :func:`measure_peaks` times ``n x n x n`` products
(``n=2048`` by default) with the benchmark's thread count:

- ``fp32``: ``torch.matmul`` on float32 tensors;
- ``bf16``: ``torch.matmul`` on bfloat16 tensors (only where the device computes bf16 natively,
  see :func:`mmext.deploy.runners.native_bf16`; elsewhere torch emulates it and the figure would
  say nothing about the hardware);
- ``int8``: ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32, the kernel its quantized
  models use) on the CPU, where onnxruntime is installed.

Each figure is the best of ``repeats`` timed runs after one untimed run, in GFLOP/s (GOP/s for
int8), counting 2 operations per multiply-accumulate. A benchmark row's ``peak_fraction`` is its
achieved GFLOP/s over the peak of its precision (:data:`MODE_PRECISION`).

On a shared machine whose speed drifts, a peak measured once at the start can be far from the
speed the machine had when a row was timed. :func:`gemm_runners` therefore gives the same GEMMs
as runners that the benchmark times in the same interleaved rounds as each arch's modes; rows
then use those medians (``peak_gflops_s``), and the JSON keeps both.
"""
import os.path as osp
import tempfile
import time

import torch

from mmext.deploy.runners import native_bf16, threads_context

#: The arithmetic each mode runs in (modes not listed run in fp32).
MODE_PRECISION = {'bf16': 'bf16', 'openvino_bf16': 'bf16', 'onnxruntime_int8': 'int8'}


def mode_precision(mode, amp=False):
    """``'fp32'``, ``'bf16'``, ``'int8'`` or ``'fp16'`` (fp16 autocast on a GPU protocol)."""
    if amp and mode not in MODE_PRECISION:
        return 'fp16'
    return MODE_PRECISION.get(mode, 'fp32')


def gflops_per_s(macs, batch, median_ms):
    """Achieved GFLOP/s of ``batch`` images of ``macs`` multiply-accumulates each in
    ``median_ms`` milliseconds (2 FLOP per MAC)."""
    if not macs or not median_ms or median_ms <= 0:
        return None
    return 2.0 * macs * batch / (median_ms / 1000.0) / 1e9


def _best_time(fn, repeats, sync=None):
    fn()
    best = float('inf')
    for _ in range(max(int(repeats), 1)):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype, n=2048, device='cpu', repeats=3):
    """GFLOP/s of ``torch.matmul`` of two ``n x n`` ``dtype`` tensors (best of ``repeats``)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == 'cuda' else None
    with torch.inference_mode():
        seconds = _best_time(lambda: torch.matmul(a, b), repeats, sync)
    return 2.0 * n ** 3 / seconds / 1e9


def _int8_session(n, threads, folder):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from mmext.deploy.export import ort_session
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), 'B')
    graph = helper.make_graph(
        [helper.make_node('MatMulInteger', ['A', 'B'], ['Y'])], 'int8_peak',
        [helper.make_tensor_value_info('A', TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info('Y', TensorProto.INT32, [n, n])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = min(model.ir_version, 9)
    path = osp.join(folder, 'int8_peak.onnx')
    onnx.save(model, path)
    session = ort_session(path, threads=threads)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {'A': a})


def gemm_runners(device='cpu', threads=1, n=2048):
    """``{precision: Runner}`` of one ``n^3`` GEMM per precision this device has natively
    (fp32, bf16, int8 on the CPU with onnxruntime); ``Runner.info['gflop']`` is its work."""
    import shutil
    from mmext.deploy.runners import Runner, module_version
    gen = torch.Generator().manual_seed(0)
    out = {}
    dtypes = {'fp32': torch.float32}
    if native_bf16(device):
        dtypes['bf16'] = torch.bfloat16
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)

        def run(a=a, b=b):
            with torch.inference_mode():
                return torch.matmul(a, b)
        out[name] = Runner(run, info=dict(gflop=2.0 * n ** 3 / 1e9))
    if device == 'cpu' and module_version('onnxruntime') and module_version('onnx'):
        folder = tempfile.mkdtemp(prefix='mmext_peak_')
        out['int8'] = Runner(_int8_session(n, threads or 1, folder),
                             lambda: shutil.rmtree(folder, ignore_errors=True),
                             info=dict(gflop=2.0 * n ** 3 / 1e9))
    return out


def int8_peak(n=2048, threads=1, repeats=3):
    """GOP/s of ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32) on ``n x n`` inputs;
    ``None`` where onnxruntime or onnx is not installed."""
    from mmext.deploy.runners import module_version
    if not (module_version('onnxruntime') and module_version('onnx')):
        return None
    with tempfile.TemporaryDirectory(prefix='mmext_peak_') as folder:
        seconds = _best_time(_int8_session(n, threads, folder), repeats)
    return 2.0 * n ** 3 / seconds / 1e9


def measure_peaks(device='cpu', threads=1, n=2048, repeats=3):
    """``{'fp32': GFLOP/s, 'bf16': GFLOP/s or None, 'int8': GOP/s or None, ...}`` of this
    machine with ``threads`` CPU threads (see the module docstring); the dict also records
    ``n``, ``threads``, ``device`` and ``repeats``, and ``notes`` for each missing figure."""
    peaks = dict(device=device, threads=threads, n=n, repeats=repeats, notes={})
    with threads_context(threads if device == 'cpu' else None):
        peaks['fp32'] = round(matmul_peak(torch.float32, n, device, repeats), 2)
        if native_bf16(device):
            peaks['bf16'] = round(matmul_peak(torch.bfloat16, n, device, repeats), 2)
        else:
            peaks['bf16'] = None
            peaks['notes']['bf16'] = 'no native bf16 on this device'
        if device == 'cuda':
            peaks['fp16'] = round(matmul_peak(torch.float16, n, device, repeats), 2)
            peaks['int8'] = None
            peaks['notes']['int8'] = 'int8 peak is measured on the CPU only'
        else:
            value = int8_peak(n, threads or 1, repeats)
            peaks['int8'] = None if value is None else round(value, 2)
            if value is None:
                peaks['notes']['int8'] = 'onnxruntime is not installed'
    return peaks
