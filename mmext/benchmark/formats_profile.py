"""Where an exported detector's time goes: backbone / neck / head / decode + NMS, per format.

* OpenVINO: the CPU plugin's per-node counters (``PERF_COUNT``) of a separately compiled copy of
  the file with the session's settings; each executed node is given to a part by the module
  scope in its original ONNX node names (``/backbone/...``, ``/neck/...``, ``/bbox_head/...``;
  the runtime model's ``originalLayersNames``), a node the plugin created (a reorder, a
  transformation's output) to the part of the node feeding it.
* ONNX Runtime: its profiler (``enable_profiling``): every node's kernel time, by node name.
* PyTorch: timers around the detector's ``backbone``, ``neck`` and ``bbox_head`` forwards.

Whatever belongs to none of the three modules -- priors, box decoding, the ``nms_pre`` top-k,
score filter, NMS, the fixed-size gather, and the input normalisation where the runtime did not
fold it into the first convolution -- is ``decode_nms``. Figures are ms per image, medians over
``runs`` runs of one batch; profilers add a little per node, so the parts' sum (``total``) is
reported beside them and may differ from the timed ``inference_ms``.
"""
import json
import os
import re
import statistics
import tempfile
import time

import numpy as np

#: the parts, in graph order
PARTS = ('backbone', 'neck', 'head', 'decode_nms')
#: module scope token -> part
SCOPES = (('backbone', 'backbone'), ('neck', 'neck'), ('bbox_head', 'head'))
DEFAULT_RUNS = 5


def name_part(name):
    """The part of an ONNX/runtime node name by its module scope, or ``None`` if it names none
    (``/neck/out_convs.0/conv/Conv`` -> ``'neck'``; ``/NonMaxSuppression`` -> ``None``)."""
    tokens = set(re.split(r'[/,\s]+', str(name)))
    for token, part in SCOPES:
        if token in tokens:
            return part
    return None


def split_times(entries, batch, runs):
    """``{part: ms per image}`` + ``total`` from ``(part or None, microseconds)`` summed over
    ``runs`` runs of a ``batch``; ``None`` parts count as ``decode_nms``."""
    sums = dict.fromkeys(PARTS, 0.0)
    for part, us in entries:
        sums[part or 'decode_nms'] += float(us)
    scale = 1e-3 / (max(1, runs) * max(1, batch))
    out = {p: round(v * scale, 3) for p, v in sums.items()}
    out['total'] = round(sum(sums.values()) * scale, 3)
    return out


# ------------------------------------------------------------------------------ OpenVINO
def _runtime_parts(compiled):
    """``{executed node name: part}`` of a compiled OpenVINO model (see the module docstring)."""
    parts = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        name = op.get_friendly_name()
        info = op.get_rt_info()
        original = info['originalLayersNames'].astype(str) if 'originalLayersNames' in info \
            else ''
        part = name_part(original) or name_part(name)
        if part is None and not original.strip():
            # created by the plugin (reorder, converted layout): the part of what feeds it
            for value in op.inputs():
                src = value.get_source_output().get_node().get_friendly_name()
                if parts.get(src):
                    part = parts[src]
                    break
        parts[name] = part
    return parts


def openvino_split(path, precision, x, threads=1, runs=DEFAULT_RUNS):
    """:func:`split_times` of ``path`` on OpenVINO's CPU plugin (``precision`` as
    :class:`~mmext.deploy.detector_runtime.DetectorSession` compiles it) for the batch ``x``."""
    from mmext.deploy.detector_runtime import compile_openvino
    # the static shape of the batch, as DetectorSession compiles it
    compiled = compile_openvino(path, precision, threads, x.shape, PERF_COUNT=True)
    parts = _runtime_parts(compiled)
    request = compiled.create_infer_request()
    request.infer({0: x})  # warm-up
    totals = []
    for _ in range(runs):
        request.infer({0: x})
        totals.append([(parts.get(p.node_name), p.real_time.total_seconds() * 1e6)
                       for p in request.profiling_info])
    return _median_split(totals, x.shape[0])


def _median_split(per_run, batch):
    """The median run (by total) of per-run entries, as :func:`split_times`."""
    splits = [split_times(entries, batch, 1) for entries in per_run]
    totals = [s['total'] for s in splits]
    return splits[totals.index(statistics.median_low(totals))]


# ------------------------------------------------------------------------------ ONNX Runtime
def onnxruntime_split(path, x, threads=1, runs=DEFAULT_RUNS):
    """:func:`split_times` of ``path`` in ONNX Runtime (its profiler's node kernel times)."""
    import onnxruntime as ort
    from mmext.deploy.export import ort_session_options
    with tempfile.TemporaryDirectory(prefix='mmext_ortprof_') as folder:
        options = ort_session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, 'profile')
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})  # warm-up (its run is dropped below)
        for _ in range(runs):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    return _median_split(_ort_runs(events)[-runs:], x.shape[0])


def _ort_runs(events):
    """Node kernel events grouped by the ``model_run`` they belong to (by time span)."""
    runs = [(e['ts'], e['ts'] + e.get('dur', 0)) for e in events
            if e.get('cat') == 'Session' and e.get('name') == 'model_run']
    grouped = [[] for _ in runs]
    for event in events:
        name = str(event.get('name', ''))
        if event.get('cat') != 'Node' or not name.endswith('_kernel_time'):
            continue
        ts = event.get('ts', 0)
        for i, (lo, hi) in enumerate(runs):
            if lo <= ts <= hi:
                grouped[i].append((name_part(name[:-len('_kernel_time')]), event.get('dur', 0)))
                break
    return grouped


# ------------------------------------------------------------------------------ PyTorch
def torch_split(wrapper, x, runs=DEFAULT_RUNS):
    """:func:`split_times` of the eager wrapper (a ``DetectorWrapper`` or its bf16 copy): timers
    around the detector's backbone, neck and bbox_head; the rest of the forward is
    ``decode_nms``."""
    import torch
    detector = wrapper.detector
    spans = []
    handles = []
    for attr, part in (('backbone', 'backbone'), ('neck', 'neck'), ('bbox_head', 'head')):
        module = getattr(detector, attr, None)
        if module is None:
            continue
        handles.append(module.register_forward_pre_hook(
            lambda m, a, part=part: spans.append((part, time.perf_counter()))))
        handles.append(module.register_forward_hook(
            lambda m, a, o, part=part: spans.append((part, time.perf_counter()))))
    per_run = []
    try:
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            wrapper(xt)  # warm-up
            for _ in range(runs):
                spans.clear()
                start = time.perf_counter()
                wrapper(xt)
                total = time.perf_counter() - start
                inside = {}
                for (part, t0), (_, t1) in zip(spans[0::2], spans[1::2]):
                    inside[part] = inside.get(part, 0.0) + (t1 - t0)
                entries = [(p, s * 1e6) for p, s in inside.items()]
                entries.append((None, max(0.0, total - sum(inside.values())) * 1e6))
                per_run.append(entries)
    finally:
        for handle in handles:
            handle.remove()
    return _median_split(per_run, x.shape[0])


def profile_split(fmt, engine, x, threads=1, runs=DEFAULT_RUNS):
    """The split of one format (``'openvino-bf16'``, ...) for its :class:`Engine` on batch
    ``x``; ``None`` for an engine without a file or module to profile."""
    backend, precision = fmt.split('-')
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == 'torch':
        return torch_split(engine.module, x, runs) if engine.module is not None else None
    if engine.path is None:
        return None
    if backend == 'openvino':
        return openvino_split(engine.path, precision, x, threads, runs)
    return onnxruntime_split(engine.path, x, threads, runs)
