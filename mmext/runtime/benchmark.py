"""Backbone speed: throughput and latency under fixed protocols, in several execution modes.

Only torch and mmengine are needed (timm, torchvision and onnxruntime are used when installed), so
the same code runs on a CPU box and on a GPU machine that has no mmcv/mmdet.

Protocols (:data:`PROTOCOLS`):

=================  ======  =====  ===========  ======================================================
name               device  batch  input        notes
=================  ======  =====  ===========  ======================================================
gpu_throughput     cuda    256    224 (S4 256) fp16 autocast, images/s (the SHViT paper's GPU protocol)
gpu_latency_det    cuda    1      800x1344     fp32, detection input
gpu_latency_seg    cuda    1      512x512      fp32, segmentation input
cpu_throughput     cpu     16     224 (S4 256) one thread (the SHViT paper's CPU protocol)
cpu_latency_seg    cpu     1      512x512      one thread
cpu_latency_det    cpu     1      800x1344     one thread, detection input
=================  ======  =====  ===========  ======================================================

Modes (:data:`MODES`): ``eager`` (the model as built), ``deploy`` (BatchNorms folded by
``switch_to_deploy()``); the others start from the deploy model: ``channels_last`` (model and
input in NHWC), ``compile`` (``torch.compile``, compilation happens in the warm-up and is reported
as ``compile_s``), ``cuda_graph`` (one captured CUDA graph replayed; GPU only) and
``onnxruntime`` (exported to ONNX in a temporary folder, run by ONNX Runtime's CPU provider with the
protocol's thread count, one intra-op thread by default; CPU protocols only). A combination that
cannot run here gives a row whose ``status`` says ``skipped: <why>``; one that breaks gives
``failed: <error>``; the run goes on either way.

Timing: ``warmup`` untimed runs, then ``iters`` timed runs, each timed alone (CUDA events on the
GPU, ``time.perf_counter`` on the CPU); rows give every time (``times_ms``), the median, min and
max in milliseconds and ``batch * 1000 / median`` images per second. Weights are random (speed
does not depend on them).
With ``check=True`` each non-eager mode's outputs are compared with eager ones on the same input
(``max_rel_err``). With ``rounds=R`` an arch's modes take turns, ``R`` rounds of ``iters`` runs
each, pooled per mode: on a shared machine whose speed drifts, mode-to-mode ratios stay fair.

timm side by side: where timm is importable and has the model (``shvit_s1``..,
``efficientformer_l1``.., ``efficientformerv2_s0``..), it is timed in the same run: the classifier
for throughput protocols, ``features_only=True`` for latency protocols, eager (fp16 autocast where
the protocol uses it). mmext rows then carry ``timm_ms`` and ``ratio_vs_timm`` (mmext / timm median;
below 1 is faster). A timm model that cannot run at a size (timm's EfficientFormer accepts 224 only)
gives a ``failed: fails at this size ...`` row. With ``rounds`` timm's model takes its turns with
mmext's modes. A ResNet-50 row (timm's, else torchvision's) is added as a reference where either
library is installed.

``tiny=True`` shrinks every protocol (batch 2, 64x64, 1 warm-up, 3 timed runs) for tests.
"""
import contextlib
import copy
import datetime
import json
import os
import os.path as osp
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from mmext.errors import ConfigError


# ------------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Arch:
    """A benchmarked backbone: mmext ``type``/``arch``, timm's name and its classification size."""
    name: str
    type: str
    arch: str
    timm: str = None
    cls_size: int = 224


ARCHS = {a.name: a for a in [
    Arch('shvit_s1', 'SHViT', 's1', 'shvit_s1'),
    Arch('shvit_s2', 'SHViT', 's2', 'shvit_s2'),
    Arch('shvit_s3', 'SHViT', 's3', 'shvit_s3'),
    Arch('shvit_s4', 'SHViT', 's4', 'shvit_s4', cls_size=256),
    Arch('efficientformer_l1', 'EfficientFormer', 'l1', 'efficientformer_l1'),
    Arch('efficientformer_l3', 'EfficientFormer', 'l3', 'efficientformer_l3'),
    Arch('efficientformer_l7', 'EfficientFormer', 'l7', 'efficientformer_l7'),
    Arch('efficientformerv2_s0', 'EfficientFormerV2', 's0', 'efficientformerv2_s0'),
    Arch('efficientformerv2_s1', 'EfficientFormerV2', 's1', 'efficientformerv2_s1'),
    Arch('efficientformerv2_s2', 'EfficientFormerV2', 's2', 'efficientformerv2_s2'),
    Arch('efficientformerv2_l', 'EfficientFormerV2', 'l', 'efficientformerv2_l'),
    Arch('edgevit_xxs', 'EdgeViT', 'xxs'),
    Arch('edgevit_xs', 'EdgeViT', 'xs'),
    Arch('edgevit_s', 'EdgeViT', 's'),
]}

# The ResNet-50 reference (not an mmext model; eager only).
REFERENCE = Arch('resnet50', 'ResNet', '50', 'resnet50')


@dataclass(frozen=True)
class Protocol:
    """How to time: device, batch, input size (``None``: the arch's classification size)."""
    name: str
    device: str
    kind: str  # 'throughput' or 'latency'
    batch: int
    size: tuple = None
    amp: bool = False
    threads: int = None
    warmup: int = 10
    iters: int = 50
    description: str = ''


PROTOCOLS = {p.name: p for p in [
    Protocol('gpu_throughput', 'cuda', 'throughput', 256, None, amp=True, warmup=20, iters=100,
             description='GPU, batch 256, 224 (SHViT-S4: 256), fp16 autocast'),
    Protocol('gpu_latency_det', 'cuda', 'latency', 1, (800, 1344), warmup=30, iters=200,
             description='GPU, batch 1, 800x1344, fp32'),
    Protocol('gpu_latency_seg', 'cuda', 'latency', 1, (512, 512), warmup=30, iters=200,
             description='GPU, batch 1, 512x512, fp32'),
    Protocol('cpu_throughput', 'cpu', 'throughput', 16, None, threads=1, warmup=3, iters=20,
             description='CPU, 1 thread, batch 16, 224 (SHViT-S4: 256)'),
    Protocol('cpu_latency_seg', 'cpu', 'latency', 1, (512, 512), threads=1, warmup=3, iters=20,
             description='CPU, 1 thread, batch 1, 512x512'),
    Protocol('cpu_latency_det', 'cpu', 'latency', 1, (800, 1344), threads=1, warmup=2, iters=10,
             description='CPU, 1 thread, batch 1, 800x1344'),
]}

MODES = ('eager', 'deploy', 'channels_last', 'compile', 'cuda_graph', 'onnxruntime')
DEFAULT_MODES = {'cuda': ('eager', 'deploy', 'channels_last', 'compile', 'cuda_graph'),
                 'cpu': ('eager', 'deploy', 'onnxruntime')}
TINY = dict(batch=2, size=(64, 64), warmup=1, iters=3)

FAMILIES = ('shvit', 'efficientformer', 'efficientformerv2', 'edgevit')


# ------------------------------------------------------------------------------------ choices
def _expand(names, table, what, groups=None):
    if names is None:
        return None
    if isinstance(names, str):
        names = [n for n in names.replace(',', ' ').split() if n]
    out = []
    for name in names:
        key = name.lower()
        if key == 'all':
            picked = list(table)
        elif groups and key in groups:
            picked = groups[key]
        elif key in table:
            picked = [key]
        else:
            extra = f' (or {", ".join(groups)})' if groups else ''
            raise ConfigError(f'unknown {what} {name!r}; choose from {", ".join(table)}{extra} '
                              'or all.')
        out += [p for p in picked if p not in out]
    return out


def resolve_archs(names=None):
    """Arch names (``'shvit_s1'``...), family names (``'shvit'``) or ``'all'`` (the default)."""
    groups = {f: [n for n in ARCHS if n.rsplit('_', 1)[0] == f] for f in FAMILIES}
    return [ARCHS[n] for n in (_expand(names, ARCHS, 'arch', groups) or list(ARCHS))]


def resolve_protocols(names=None):
    """Protocol names or ``'all'``; the default is the GPU ones with CUDA, else the CPU ones."""
    groups = {'gpu': [n for n, p in PROTOCOLS.items() if p.device == 'cuda'],
              'cpu': [n for n, p in PROTOCOLS.items() if p.device == 'cpu']}
    picked = _expand(names, PROTOCOLS, 'protocol', groups)
    if picked is None:
        picked = groups['gpu'] if torch.cuda.is_available() else groups['cpu']
    return [PROTOCOLS[n] for n in picked]


def resolve_modes(names=None):
    """Mode names or ``'all'``; ``None`` picks :data:`DEFAULT_MODES` per protocol device."""
    return _expand(names, {m: m for m in MODES}, 'mode')


# ------------------------------------------------------------------------------------ environment
def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    if device == 'cuda':
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return f'{cpu_name()} ({os.cpu_count()} logical cores)'


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception:  # a broken optional install is the same as none here
        return None
    return getattr(module, '__version__', 'unknown')


def environment():
    """What the numbers depend on: devices, library versions."""
    env = dict(torch=torch.__version__, python=platform.python_version(),
               cpu=device_name('cpu'), cuda=torch.version.cuda,
               gpu=device_name('cuda') if torch.cuda.is_available() else None,
               cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
               timm=_version('timm'), torchvision=_version('torchvision'),
               onnxruntime=_version('onnxruntime'),
               date=datetime.datetime.now().isoformat(timespec='seconds'))
    return env


# ------------------------------------------------------------------------------------ models
def build_mmext(arch, seed=0):
    """The mmext backbone of ``arch`` (random weights, all stages returned, eval mode)."""
    from mmext.registry import MODELS
    import mmext.models  # noqa: F401
    cls = MODELS.get(arch.type)
    if cls is None:
        raise ConfigError(f'mmext has no backbone {arch.type!r} (is its module imported in '
                          'mmext/models/__init__.py?)')
    torch.manual_seed(seed)
    return cls(arch=arch.arch).eval()


def _timm():
    try:
        import timm
        return timm
    except Exception:
        return None


def build_timm(name, features, seed=0):
    """timm's model: the classifier, or ``features_only=True`` for dense-prediction sizes."""
    timm = _timm()
    torch.manual_seed(seed)
    if features:
        return timm.create_model(name, pretrained=False, features_only=True).eval()
    return timm.create_model(name, pretrained=False).eval()


class _TorchvisionResNetFeatures(torch.nn.Module):
    """torchvision's ResNet without pooling and classifier: the four stage outputs."""

    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, x):
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        outs = []
        for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
            x = layer(x)
            outs.append(x)
        return tuple(outs)


def build_reference(features, seed=0):
    """ResNet-50 from timm or else torchvision: ``(model, source)``, or ``(None, None)``."""
    torch.manual_seed(seed)
    if _timm() is not None:
        return build_timm('resnet50', features, seed), 'timm'
    try:
        import torchvision
    except Exception:
        return None, None
    model = torchvision.models.resnet50(weights=None).eval()
    return (_TorchvisionResNetFeatures(model) if features else model), 'torchvision'


# ------------------------------------------------------------------------------------ runners
@contextlib.contextmanager
def _threads(n):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _cudnn_benchmark(device):
    if device != 'cuda':
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def _autocast(device, amp, cache_enabled=True):
    if amp and device == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def _outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def skip_reason(mode, device):
    """Why ``mode`` cannot run on ``device`` here (``None`` when it can)."""
    if device == 'cuda' and not torch.cuda.is_available():
        return 'CUDA is not available on this machine'
    if mode == 'cuda_graph' and device != 'cuda':
        return 'CUDA graphs need a GPU protocol'
    if mode == 'onnxruntime':
        if device != 'cpu':
            return 'ONNX Runtime is timed on the CPU protocols only'
        if _version('onnxruntime') is None:
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
        with torch.inference_mode(), _autocast(device, amp):
            model(x)
        if device == 'cuda':
            torch.cuda.synchronize()
        info['compile_s'] = round(time.perf_counter() - start, 2)
    if mode == 'cuda_graph':
        return _cuda_graph_runner(model, x, amp)

    def run():
        with torch.inference_mode(), _autocast(device, amp):
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
                with _autocast('cuda', amp, cache_enabled=False):
                    model(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with _autocast('cuda', amp, cache_enabled=False):
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
    from mmext.runtime.export import export_onnx, ort_session
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


def time_runner(run, device, warmup, iters):
    """Milliseconds of each of ``iters`` runs of ``run()`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        run()
    times = []
    if device == 'cuda':
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(iters):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def measure_latency(model, input_shape=(1, 3, 224, 224), mode='deploy', warmup=5, iters=20,
                    threads=1):
    """Median CPU forward time of ``model`` on a random input in ``mode``, in milliseconds.

    The caller's model is not changed (see :func:`make_runner`); ``threads`` is the torch (and
    ONNX Runtime) thread count during the measurement.
    """
    x = torch.randn(*input_shape)
    with _threads(threads):
        runner = make_runner(model, mode, x, threads=threads)
        try:
            return statistics.median(time_runner(runner.run, 'cpu', warmup, iters))
        finally:
            runner.close()


def max_rel_err(ref, out):
    """Largest ``max|ref - out| / max|ref|`` over paired outputs (float32)."""
    errs = []
    for a, b in zip(_outputs(ref), _outputs(out)):
        a = a.detach().float().cpu()
        b = b.detach().float().cpu()
        if a.shape != b.shape:
            return float('inf')
        errs.append(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
    return max(errs) if errs else None


# ------------------------------------------------------------------------------------ one case
def case_settings(arch, protocol, tiny=False, warmup=None, iters=None, threads=None, amp=None,
                  batch=None):
    """The effective batch, ``(H, W)``, warm-up, iterations, threads and autocast of a case."""
    size = protocol.size or (arch.cls_size, arch.cls_size)
    s = dict(batch=protocol.batch, size=tuple(size), warmup=protocol.warmup,
             iters=protocol.iters, threads=protocol.threads, amp=protocol.amp)
    if tiny:
        s.update(batch=min(protocol.batch, TINY['batch']), size=TINY['size'],
                 warmup=TINY['warmup'], iters=TINY['iters'])
    for key, value in dict(warmup=warmup, iters=iters, threads=threads, amp=amp,
                           batch=batch).items():
        if value is not None:
            s[key] = value
    if protocol.device != 'cpu':
        s['threads'] = None
    if protocol.device != 'cuda':
        s['amp'] = False
    return s


def _base_row(arch_name, source, mode, protocol, settings, env):
    h, w = settings['size']
    device = protocol.device
    return dict(
        arch=arch_name, source=source, mode=mode, protocol=protocol.name, device=device,
        device_name=(env['gpu'] if device == 'cuda' else env['cpu']) or 'unavailable',
        torch=env['torch'], batch=settings['batch'], height=h, width=w, input_size=f'{h}x{w}',
        amp=bool(settings['amp']), threads=settings['threads'], warmup=settings['warmup'],
        iters=settings['iters'], median_ms=None, min_ms=None, max_ms=None, img_per_s=None,
        status='ok')


def _fill_times(row, times):
    med = statistics.median(times)
    row.update(median_ms=round(med, 4), min_ms=round(min(times), 4), max_ms=round(max(times), 4),
               img_per_s=round(row['batch'] * 1000.0 / med, 2) if med > 0 else None,
               times_ms=[round(t, 3) for t in times])


def _failure(exc):
    text = ' '.join(str(exc).split())
    return f'failed: {type(exc).__name__}: {text[:300]}'


def _free_cuda():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_case(model, mode, protocol, settings, env, arch_name, source='mmext', ref=None,
                 compile_kwargs=None, tmp_dir=None):
    """A row and a :class:`Runner` for ``model`` in ``mode`` (``None`` when skipped or broken,
    the row's ``status`` then says why); ``ref`` (eager outputs) fills ``max_rel_err``."""
    row = _base_row(arch_name, source, mode, protocol, settings, env)
    reason = skip_reason(mode, protocol.device)
    if reason:
        row['status'] = f'skipped: {reason}'
        return row, None
    runner = None
    try:
        with _threads(settings['threads']), _cudnn_benchmark(protocol.device):
            x = _input(settings, protocol.device)
            runner = make_runner(model, mode, x, amp=settings['amp'],
                                 threads=settings['threads'], compile_kwargs=compile_kwargs,
                                 tmp_dir=tmp_dir)
            if ref is not None:
                row['max_rel_err'] = max_rel_err(ref, runner.run())
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001  (one broken case must not end the benchmark)
        row['status'] = _failure(exc)
        if runner is not None:
            runner.close()
        _free_cuda()
        return row, None
    return row, runner


def time_cases(cases, protocol, settings, rounds=1):
    """Time prepared ``(row, runner)`` pairs and fill their rows; closes the runners.

    With ``rounds > 1`` the cases take turns: each round times every case for ``iters`` runs
    (after ``warmup`` runs in the first round and one in later ones), and a row's figures pool
    all its rounds. A slow drift of a shared machine then hits every mode alike instead of
    whichever was timed last.
    """
    device = protocol.device
    rounds = max(int(rounds), 1)
    times = [[] for _ in cases]
    live = [runner is not None for _, runner in cases]
    try:
        for r in range(rounds):
            for i, (row, runner) in enumerate(cases):
                if not live[i]:
                    continue
                try:
                    with _threads(settings['threads']), _cudnn_benchmark(device):
                        times[i] += time_runner(runner.run, device,
                                                settings['warmup'] if r == 0 else 1,
                                                settings['iters'])
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    row['status'] = _failure(exc)
                    live[i] = False
        for i, (row, runner) in enumerate(cases):
            if live[i]:
                _fill_times(row, times[i])
                row.update(runner.info, rounds=rounds)
    finally:
        for _, runner in cases:
            if runner is not None:
                runner.close()
        _free_cuda()
    return [row for row, _ in cases]


def _input(settings, device, seed=0):
    h, w = settings['size']
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(settings['batch'], 3, h, w, generator=gen).to(device)


def _eager_reference(model, protocol, settings):
    device = protocol.device
    with _threads(settings['threads']):
        x = _input(settings, device)
        with torch.inference_mode(), _autocast(device, settings['amp']):
            out = model.to(device).eval()(x)
    return [t.detach().float().cpu() for t in _outputs(out)]


# ------------------------------------------------------------------------------------ the run
def run_benchmark(archs=None, protocols=None, modes=None, tiny=False, warmup=None, iters=None,
                  threads=None, amp=None, batch=None, compare_timm=True, reference=True,
                  check=True, compile_kwargs=None, progress=True, tmp_dir=None, seed=0,
                  rounds=1):
    """Time backbones; returns a list of row dicts (see the module docstring).

    Args:
        archs: names from :data:`ARCHS`, family names (``'shvit'``) or ``'all'`` (default).
        protocols: names from :data:`PROTOCOLS`, ``'cpu'``, ``'gpu'`` or ``'all'``; default
            ``'gpu'`` with CUDA, else ``'cpu'``. GPU protocols on a machine without CUDA give
            skipped rows.
        modes: names from :data:`MODES` or ``'all'``; default :data:`DEFAULT_MODES` per device.
        tiny (bool): batch 2, 64x64, 1 warm-up and 3 timed runs everywhere (for tests).
        warmup, iters, threads, amp, batch: override the protocols' values.
        compare_timm (bool): time timm's models too where timm is installed.
        reference (bool): add ResNet-50 rows where timm or torchvision is installed.
        check (bool): record each mode's ``max_rel_err`` against eager outputs.
        compile_kwargs (dict): passed to ``torch.compile`` (e.g. ``{'mode': 'max-autotune'}``).
        progress (bool): log each case as it finishes (mmengine's logger).
        rounds (int): time an arch's modes in this many interleaved rounds of ``iters`` runs
            (see :func:`time_cases`); 1 times each mode in one go.
    """
    from mmengine.logging import print_log
    arch_list = resolve_archs(archs)
    proto_list = resolve_protocols(protocols)
    mode_list = resolve_modes(modes)
    env = environment()
    timm = _timm() if compare_timm else None
    overrides = dict(tiny=tiny, warmup=warmup, iters=iters, threads=threads, amp=amp,
                     batch=batch)

    plan = []  # (arch, protocol, modes)
    for arch in arch_list:
        for protocol in proto_list:
            plan.append((arch, protocol, mode_list or list(DEFAULT_MODES[protocol.device])))
    total = sum(len(m) for _, _, m in plan)
    total += sum(1 for a, _, _ in plan if timm is not None and a.timm)
    if reference:
        total += len(proto_list)
    rows, done = [], 0

    def log(row):
        nonlocal done
        done += 1
        if not progress:
            return
        if row['status'] == 'ok':
            what = f'{row["median_ms"]:.3f} ms median, {row["img_per_s"]:.1f} img/s'
        else:
            what = row['status']
        print_log(f'[{done}/{total}] {row["arch"]} ({row["source"]}, {row["mode"]}) '
                  f'{row["protocol"]} b{row["batch"]} {row["input_size"]}: {what}',
                  logger='current')

    base_models = {}
    for arch, protocol, modes_here in plan:
        settings = case_settings(arch, protocol, **overrides)
        model = base_models.get(arch.name)
        if model is None:
            try:
                model = base_models[arch.name] = build_mmext(arch, seed)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001
                for mode in modes_here:
                    row = _base_row(arch.name, 'mmext', mode, protocol, settings, env)
                    row['status'] = _failure(exc)
                    rows.append(row)
                    log(row)
                continue
        ref = None
        if check and protocol.device in _available_devices() and \
                any(m != 'eager' and not skip_reason(m, protocol.device) for m in modes_here):
            try:
                ref = _eager_reference(model, protocol, settings)
            except Exception:  # noqa: BLE001  (the timed cases will say what is wrong)
                ref = None
        cases = [prepare_case(model, mode, protocol, settings, env, arch.name, ref=ref,
                              compile_kwargs=compile_kwargs, tmp_dir=tmp_dir)
                 for mode in modes_here]
        if timm is not None and arch.timm:  # timed in the same rounds as mmext's modes
            cases.append(_other_case(lambda f: build_timm(arch.timm, f, seed), 'timm',
                                     arch.name, protocol, settings, env))
        for i, row in enumerate(time_cases(cases, protocol, settings, rounds)):
            if i == len(modes_here):
                _say_size_failure(row)
            elif modes_here[i] == 'eager' and ref is not None and row['status'] == 'ok':
                row['max_rel_err'] = 0.0
            rows.append(row)
            log(row)
        ref = None
        model.cpu()
    if reference:
        for protocol in proto_list:
            settings = case_settings(REFERENCE, protocol, **overrides)
            row = _time_reference(protocol, settings, env, seed)
            if row is not None:
                rows.append(row)
                log(row)
            else:
                done += 1
    add_timm_ratios(rows)
    return rows


def _available_devices():
    return ('cpu', 'cuda') if torch.cuda.is_available() else ('cpu', )


def _other_case(build, source, arch_name, protocol, settings, env):
    """A prepared ``(row, runner)`` for a timm/torchvision model run eagerly (runner ``None``
    when it is skipped or fails to build; the row says why)."""
    features = protocol.kind == 'latency'
    row = _base_row(arch_name, source, 'eager', protocol, settings, env)
    reason = skip_reason('eager', protocol.device)
    if reason:
        row['status'] = f'skipped: {reason}'
        return row, None
    try:
        model = build(features)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001
        row['status'] = _failure(exc)
        return row, None
    row, runner = prepare_case(model, 'eager', protocol, settings, env, arch_name, source=source)
    row['timm_model' if source == 'timm' else 'reference_model'] = (
        'features_only' if features else 'classifier')
    return row, runner


def _say_size_failure(row):
    """timm's models that cannot run a size fail deep inside; say that it is the size."""
    if row['status'].startswith('failed'):
        row['status'] = row['status'].replace(
            'failed: ', f'failed: fails at this size ({row["input_size"]}): ', 1)
    return row


def _time_reference(protocol, settings, env, seed):
    features = protocol.kind == 'latency'
    try:
        probe, source = build_reference(features, seed)
    except Exception:  # noqa: BLE001
        probe, source = None, None
    if probe is None:
        return None
    case = _other_case(lambda f: probe, source, REFERENCE.name, protocol, settings, env)
    return _say_size_failure(time_cases([case], protocol, settings)[0])


def add_timm_ratios(rows):
    """Give every mmext row ``timm_ms`` and ``ratio_vs_timm`` where timm ran the same case."""
    timm_ms = {(r['arch'], r['protocol']): r['median_ms'] for r in rows
               if r['source'] == 'timm' and r['status'] == 'ok'}
    for row in rows:
        if row['source'] != 'mmext':
            continue
        ref = timm_ms.get((row['arch'], row['protocol']))
        row['timm_ms'] = ref
        row['ratio_vs_timm'] = (round(row['median_ms'] / ref, 4)
                                if ref and row['median_ms'] is not None else None)
    return rows


# ------------------------------------------------------------------------------------ output
MD_COLUMNS = [('arch', 'arch'), ('source', 'source'), ('mode', 'mode'),
              ('protocol', 'protocol'), ('device_name', 'device'), ('torch', 'torch'),
              ('batch', 'batch'), ('input_size', 'input'), ('amp', 'fp16'),
              ('threads', 'threads'), ('median_ms', 'median ms'), ('min_ms', 'min ms'),
              ('max_ms', 'max ms'), ('img_per_s', 'img/s'), ('ratio_vs_timm', 'mmext/timm'),
              ('max_rel_err', 'rel. err'), ('status', 'status')]


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f'{value:.3f}'.rstrip('0').rstrip('.') if abs(value) < 1 else f'{value:.2f}'
        return f'{value:.2e}'
    return str(value).replace('|', '\\|')


def to_markdown(rows, meta=None):
    """A markdown table of the rows (and a header with the environment)."""
    lines = ['# Backbone benchmark', '']
    if meta:
        for key in ('date', 'torch', 'cuda', 'gpu', 'cpu', 'timm', 'onnxruntime'):
            if meta.get(key):
                lines.append(f'- {key}: {meta[key]}')
        lines.append('')
    lines.append('| ' + ' | '.join(title for _, title in MD_COLUMNS) + ' |')
    lines.append('|' + '|'.join('---' for _ in MD_COLUMNS) + '|')
    for row in rows:
        lines.append('| ' + ' | '.join(_fmt(row.get(key)) for key, _ in MD_COLUMNS) + ' |')
    return '\n'.join(lines) + '\n'


def write_results(rows, json_path, md_path=None, meta=None):
    """Write ``{'meta': ..., 'rows': [...]}`` as JSON and the markdown table; returns the paths."""
    meta = dict(meta or environment())
    for path in (json_path, md_path):
        if path and osp.dirname(osp.abspath(path)):
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(json_path, 'w') as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1, default=_json_default)
    if md_path is None:
        md_path = osp.splitext(json_path)[0] + '.md'
    with open(md_path, 'w') as f:
        f.write(to_markdown(rows, meta))
    return json_path, md_path


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def load_results(path):
    """The rows of a benchmark JSON (``{'meta', 'rows'}`` or a plain list of rows)."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        return data.get('rows', [])
    return list(data)


__all__ = ['ARCHS', 'PROTOCOLS', 'MODES', 'Arch', 'Protocol', 'run_benchmark', 'write_results',
           'load_results', 'to_markdown', 'environment', 'make_runner', 'time_runner',
           'resolve_archs', 'resolve_protocols', 'resolve_modes', 'case_settings']
