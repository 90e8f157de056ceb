"""Running a backbone in each execution mode: the one place that knows how.

Modes (:data:`MODES`): ``eager`` (the model as built), ``deploy`` (BatchNorms folded by
``switch_to_deploy()``, which also runs EdgeViT's depthwise transposed convs as a broadcast
product); the others start from the deploy model: ``channels_last`` (model and
input in NHWC), ``bf16`` (channels_last, weights in bfloat16 and bf16 autocast; the input is
cast in each run; only where the device computes bf16 natively, see :func:`native_bf16`),
``compile`` (``torch.compile``; compilation happens in the first call and is reported as
``compile_s``), ``cuda_graph`` (one captured CUDA graph replayed; GPU only), ``onnxruntime``
(exported to ONNX in a temporary folder, run by ONNX Runtime's CPU provider),
``onnxruntime_int8`` (that graph quantized to static int8 by :mod:`mmext.deploy.quantize`,
calibrated on real images), and ``openvino`` / ``openvino_bf16`` (the ONNX graph compiled by
OpenVINO for the CPU with fp32 or bf16 inference precision; OpenVINO is optional).

:func:`make_runner` prepares a copy of the caller's model for a mode and returns a
:class:`Runner` whose ``run()`` does one forward pass; :func:`skip_reason` says why a mode
cannot run on a device here.
"""
import contextlib
import copy
import time

import torch

from mmext.compat import native_bf16  # noqa: F401  (part of the runners' helpers)
from mmext.errors import ConfigError

MODES = ('eager', 'deploy', 'channels_last', 'bf16', 'compile', 'cuda_graph', 'onnxruntime',
         'onnxruntime_int8', 'openvino', 'openvino_bf16')
#: Modes that run an exported ONNX graph outside torch (CPU only).
EXPORTED_MODES = ('onnxruntime', 'onnxruntime_int8', 'openvino', 'openvino_bf16')
NO_BF16 = 'no native bf16 on this CPU (it needs AVX512-BF16 or AMX)'


def module_version(module_name):
    """``module.__version__`` of an importable module, else ``None`` (a broken optional install
    counts as none)."""
    try:
        module = __import__(module_name)
    except Exception:  # noqa: BLE001
        return None
    return getattr(module, '__version__', 'unknown')


@contextlib.contextmanager
def threads_context(n):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def cudnn_benchmark(device):
    if device != 'cuda':
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def autocast(device, amp, cache_enabled=True):
    if amp and device == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()



def skip_reason(mode, device):
    """Why ``mode`` cannot run on ``device`` here (``None`` when it can)."""
    if device == 'cuda' and not torch.cuda.is_available():
        return 'CUDA is not available on this machine'
    if mode == 'cuda_graph' and device != 'cuda':
        return 'CUDA graphs need a GPU protocol'
    if mode in ('bf16', 'openvino_bf16') and not native_bf16(device):
        return NO_BF16 if device == 'cpu' else 'this GPU has no bf16'
    if mode in EXPORTED_MODES:
        if device != 'cpu':
            return f'{mode} is timed on the CPU protocols only'
        if module_version('onnxruntime') is None and mode.startswith('onnxruntime'):
            return 'onnxruntime is not installed'
        if mode == 'onnxruntime_int8' and module_version('onnx') is None:
            return 'onnx is not installed'
        if mode.startswith('openvino') and module_version('openvino') is None:
            return 'openvino is not installed'
    if mode == 'compile' and not hasattr(torch, 'compile'):
        return 'this torch has no torch.compile'
    return None


class Runner:
    """One prepared model and input: ``run()`` does one forward; ``close()`` frees it."""

    def __init__(self, run, close=None, info=None):
        self.run = run
        self.close = close or (lambda: None)
        self.info = info or {}


def make_runner(model, mode, x, amp=False, threads=None, compile_kwargs=None, tmp_dir=None,
                calib=None):
    """Prepare ``model`` (eval mode, on ``x``'s device) for ``mode``; see the module docstring.

    ``model`` is left as it was (a copy is moved, put in eval mode and fused). ``calib``
    (``onnxruntime_int8`` only): ``dict(folder=None, num=16, method='minmax')``, the images
    int8 ranges are calibrated on (see :func:`mmext.deploy.quantize.calibration_images`).
    """
    device = x.device.type
    if mode not in MODES:
        raise ConfigError(f'unknown mode {mode!r}; choose from {", ".join(MODES)}')
    reason = skip_reason(mode, device)
    if reason:
        raise ConfigError(f'mode {mode!r} cannot run on {device} here: {reason}')
    model = copy.deepcopy(model).to(x.device).eval()
    if mode != 'eager':
        if hasattr(model, 'switch_to_deploy'):
            model.switch_to_deploy()
    if mode in EXPORTED_MODES:
        from mmext.deploy.backends import exported_runner
        return exported_runner(model, mode, x, threads, tmp_dir, calib)
    if mode == 'bf16':
        return _bf16_runner(model, x)
    if mode == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    info = {}
    if mode == 'compile':
        model = torch.compile(model, **(compile_kwargs or {}))
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, amp):
            model(x)
        if device == 'cuda':
            torch.cuda.synchronize()
        info['compile_s'] = round(time.perf_counter() - start, 2)
    if mode == 'cuda_graph':
        return _cuda_graph_runner(model, x, amp)

    def run():
        with torch.inference_mode(), autocast(device, amp):
            return model(x)

    return Runner(run, info=info)


def to_bf16(x):
    """A float tensor as bfloat16, 4-D ones channels-last: cast first, then reorder (1.8x faster
    than one ``x.to(dtype, memory_format)`` call on a 3-channel image batch, measured 1.5 vs
    2.8 ms for 16x3x224x224 on one thread: the reorder then moves half the bytes)."""
    x = x.to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _bf16_runner(model, x):
    # Weights held in bf16 (no per-call casts) and NHWC (oneDNN's blocked bf16 convolutions want
    # it: SHViT-S1 b16 2.2x, EfficientFormer-L1 2.1x over bf16 autocast in NCHW on Zen 4);
    # autocast covers any op that meets a float32 tensor made inside forward.
    model = model.to(memory_format=torch.channels_last, dtype=torch.bfloat16)
    device = x.device.type

    def run():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            return model(to_bf16(x))

    return Runner(run, info=dict(precision='bf16'))


def _cuda_graph_runner(model, x, amp):
    # autocast's weight-cast cache must stay off around a capture (torch's CUDA-graph notes)
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(3):
                with autocast('cuda', amp, cache_enabled=False):
                    model(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with autocast('cuda', amp, cache_enabled=False):
                static_out = model(static_x)
    torch.cuda.synchronize()

    def run():
        graph.replay()
        return static_out

    def close():
        nonlocal graph
        del graph

    return Runner(run, close)
