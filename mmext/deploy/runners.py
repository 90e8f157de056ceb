"""Running a backbone in each execution mode: the one place that knows how.

Modes (:data:`MODES`): ``eager`` (the model as built), ``deploy`` (BatchNorms folded by
``switch_to_deploy()``); the others start from the deploy model: ``channels_last`` (model and
input in NHWC), ``compile`` (``torch.compile``; compilation happens in the first call and is
reported as ``compile_s``), ``cuda_graph`` (one captured CUDA graph replayed; GPU only) and
``onnxruntime`` (exported to ONNX in a temporary folder, run by ONNX Runtime's CPU provider).

:func:`make_runner` prepares a copy of the caller's model for a mode and returns a
:class:`Runner` whose ``run()`` does one forward pass; :func:`skip_reason` says why a mode
cannot run on a device here.
"""
import contextlib
import copy
import os.path as osp
import tempfile
import time

import torch

from mmext.errors import ConfigError

MODES = ('eager', 'deploy', 'channels_last', 'compile', 'cuda_graph', 'onnxruntime')


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
    if mode == 'onnxruntime':
        if device != 'cpu':
            return 'ONNX Runtime is timed on the CPU protocols only'
        if module_version('onnxruntime') is None:
            return 'onnxruntime is not installed'
    if mode == 'compile' and not hasattr(torch, 'compile'):
        return 'this torch has no torch.compile'
    return None


class Runner:
    """One prepared model and input: ``run()`` does one forward; ``close()`` frees it."""

    def __init__(self, run, close=None, info=None):
        self.run = run
        self.close = close or (lambda: None)
        self.info = info or {}


def make_runner(model, mode, x, amp=False, threads=None, compile_kwargs=None, tmp_dir=None):
    """Prepare ``model`` (eval mode, on ``x``'s device) for ``mode``; see the module docstring.

    ``model`` is left as it was (a copy is moved, put in eval mode and fused).
    """
    device = x.device.type
    if mode not in MODES:
        raise ConfigError(f'unknown mode {mode!r}; choose from {", ".join(MODES)}')
    model = copy.deepcopy(model).to(x.device).eval()
    if mode != 'eager' and hasattr(model, 'switch_to_deploy'):
        model.switch_to_deploy()
    if mode == 'onnxruntime':
        return _ort_runner(model, x, threads, tmp_dir)
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


def _ort_runner(model, x, threads, tmp_dir=None):
    from mmext.deploy.export import export_onnx, ort_session
    folder = tempfile.mkdtemp(prefix='mmext_bench_', dir=tmp_dir)
    path = osp.join(folder, 'model.onnx')
    model = model.cpu()
    start = time.perf_counter()
    # fixed shape: ONNX Runtime plans for exactly the benchmarked input
    info = export_onnx(model, path, tuple(x.shape), dynamic=False)
    session = ort_session(path, threads=threads or 1)
    export_s = round(time.perf_counter() - start, 2)
    feed = {session.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()}

    def run():
        return [torch.from_numpy(o) for o in session.run(None, feed)]

    def close():
        import shutil
        shutil.rmtree(folder, ignore_errors=True)

    return Runner(run, close, info=dict(export_s=export_s, exporter=info['exporter'],
                                        ort_threads=int(threads or 1)))


