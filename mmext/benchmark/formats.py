"""One detector in every deployment format: bbox AP and per-image latency in one table.

Formats (:data:`FORMATS`): ``torch-fp32`` (the exported module run eagerly in PyTorch: the
detector with its backbone fused, box decoding and NMS -- :class:`~mmext.deploy.detector_export.
DetectorWrapper`), ``torch-bf16`` (backbone and neck in bf16), ``onnxruntime-fp32`` (the exported
file), ``onnxruntime-int8`` (ONNX Runtime static QDQ int8), ``openvino-fp32``, ``openvino-bf16``
(the CPU plugin's ``INFERENCE_PRECISION_HINT``) and ``openvino-int8`` (NNCF). int8 keeps the
heads' output convolutions and everything after them float (:func:`mmext.deploy.
detector_quantize.float_part`); both int8 files are calibrated on the same images.

Every format shares the path around the network: :func:`~mmext.deploy.detector_runtime.
preprocess` (mmdet's keep-ratio resize and pad) before, :func:`~mmext.deploy.detector_runtime.
postprocess` (back to image pixels) after, so the rows differ only in the engine.

* AP (:func:`evaluate`): every evaluation image alone (batch 1, its own size), the
  predictions scored by mmdet's ``CocoMetric`` (:mod:`mmext.benchmark.formats_data`);
  ``ap_delta`` is the row's AP minus the same model's ``torch-fp32`` AP.
* Time (:func:`time_cases`): ``batch`` images resized to exactly ``H x W``; one iteration is
  preprocess of each image (``preprocess_ms``), the network on the batch including decoding and
  NMS, i.e. the whole exported graph (``inference_ms``), and postprocess of each
  (``postprocess_ms``), all per image. The cases take turns in ``rounds`` (round 1 times every
  case, then round 2 ...), each with warm-up runs first; figures are medians over all rounds.
  ``fps`` = 1000 / ``inference_ms`` (Ultralytics' convention), ``e2e_fps`` counts pre- and
  postprocessing too.
* Anchors with ``status`` ``ok (latency only)`` (:func:`anchor_case`): an ONNX or OpenVINO file
  another exporter wrote (Ultralytics YOLO), timed on a random ``batch x 3 x H x W`` input.
"""
import os
import statistics
import time

import numpy as np

from mmext.benchmark.formats_engines import (LATENCY_ONLY, Engine, anchor_case, anchor_cases,
                                             failed_cases, format_skip, model_cases, new_row)
from mmext.benchmark.report import markdown_table, write_json_and_markdown
from mmext.deploy.runners import threads_context
from mmext.errors import ConfigError, MmextError
from mmext.utils import error_line

FORMATS = ('torch-fp32', 'torch-bf16', 'onnxruntime-fp32', 'onnxruntime-int8',
           'openvino-fp32', 'openvino-bf16', 'openvino-int8')
#: what every row has
ROW_KEYS = ('config', 'model', 'format', 'precision', 'status', 'size_mb', 'bbox_ap', 'ap_delta',
            'preprocess_ms', 'inference_ms', 'postprocess_ms', 'fps')
__all__ = ['FORMATS', 'ROW_KEYS', 'RTMDET_TINY', 'LATENCY_ONLY', 'Engine', 'anchor_case',
           'anchor_cases', 'failed_cases', 'format_skip', 'model_cases', 'new_row',
           'resolve_formats', 'check_settings', 'calibration_batches', 'evaluate',
           'timing_images', 'time_iteration', 'time_cases', 'fill_times', 'fill_ap_deltas',
           'AP_BOUNDS', 'ap_violations', 'profile_cases', 'run_cases', 'to_markdown',
           'write_results', 'check_rows']
#: the anchor config run like the benchmarked one by default
RTMDET_TINY = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
DEFAULT_CALIB_IMAGES = 16


def resolve_formats(formats):
    """``formats`` (names of :data:`FORMATS`, or ``'all'``) as a tuple in table order."""
    formats = [formats] if isinstance(formats, str) else list(formats or ['all'])
    if 'all' in formats:
        return FORMATS
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f'unknown format {unknown[0] if unknown else formats!r}; choose from '
                          f'{", ".join(FORMATS)} or all')
    return tuple(f for f in FORMATS if f in formats)


def check_settings(shape, batch, threads, rounds, warmup, iters):
    shape = tuple(shape)
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0
                              for s in shape):
        raise ConfigError(f'--shape takes two positive integers H W, not {list(shape)!r}.')
    for name, value, low in (('batch', batch, 1), ('threads', threads, 1),
                             ('rounds', rounds, 1), ('warmup', warmup, 0), ('iters', iters, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f'--{name} must be an integer >= {low}, not {value!r}.')
    return shape


# ------------------------------------------------------------------------------ running
def calibration_batches(images, meta, num=DEFAULT_CALIB_IMAGES):
    """The first ``num`` images preprocessed as the runtime does (one batch of 1 each)."""
    from mmext.deploy.detector_runtime import preprocess
    return [preprocess(img, meta)[0] for img in images[:max(1, int(num))]]


def evaluate(engine, meta, images):
    """The runtime's postprocessed predictions of each image (batch 1, its own size)."""
    from mmext.deploy.detector_runtime import postprocess, preprocess
    out = []
    for img in images:
        x, info = preprocess(img, meta)
        dets, labels = engine.infer(x)
        out.append(postprocess(dets[0], labels[0], info))
    return out


def timing_images(images, shape, batch):
    """``batch`` of the images resized to exactly ``shape`` (H, W), cycling if there are fewer."""
    import cv2
    h, w = shape
    return [cv2.resize(images[i % len(images)], (w, h), interpolation=cv2.INTER_LINEAR)
            for i in range(batch)]


def time_iteration(engine, meta, images, clock=time.perf_counter):
    """One timed iteration: ``(preprocess, inference, postprocess)`` ms per image."""
    from mmext.deploy.detector_runtime import postprocess, preprocess
    n = len(images)
    t0 = clock()
    prepared = [preprocess(img, meta) for img in images]
    batch = np.concatenate([x for x, _ in prepared]) if n > 1 else prepared[0][0]
    t1 = clock()
    dets, labels = engine.infer(batch)
    t2 = clock()
    for i, (_, info) in enumerate(prepared):
        postprocess(dets[i], labels[i], info)
    t3 = clock()
    return ((t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n, (t3 - t2) * 1e3 / n)


def _latency_iteration(engine, batch, clock=time.perf_counter):
    t0 = clock()
    engine.infer(None)
    return (None, (clock() - t0) * 1e3 / batch, None)


def case_label(row):
    return f'{row["model"]} {row["format"]}-{row["precision"]}'


def time_cases(cases, metas, images, batch, rounds, warmup, iters, order=None,
               progress=print):
    """Time the live cases in interleaved rounds and fill their rows' ms and fps.

    ``metas[i]`` is case ``i``'s runtime metadata (``None``: an anchor, latency only).
    ``order`` (a list) gets each case's label every time its turn in a round starts.
    """
    samples = [[] for _ in cases]
    live = [engine is not None for _, engine in cases]
    for r in range(rounds):
        progress(f'round {r + 1}/{rounds}')
        for i, (row, engine) in enumerate(cases):
            if not live[i]:
                continue
            if order is not None:
                order.append(case_label(row))
            try:
                for _ in range(warmup if r == 0 else 1):
                    _one(engine, metas[i], images, batch)
                for _ in range(iters):
                    samples[i].append(_one(engine, metas[i], images, batch))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001
                row['status'] = f'failed: {error_line(exc, 200)}'
                live[i] = False
    for i, (row, _) in enumerate(cases):
        if live[i] and samples[i]:
            fill_times(row, samples[i], batch, rounds)
    return [row for row, _ in cases]


def _one(engine, meta, images, batch):
    if meta is None:
        return _latency_iteration(engine, batch)
    return time_iteration(engine, meta, images)


def fill_times(row, samples, batch, rounds):
    """Medians of ``(pre, inference, post)`` samples (ms per image) into ``row``."""
    def med(k):
        values = [s[k] for s in samples if s[k] is not None]
        return round(statistics.median(values), 3) if values else None

    row.update(preprocess_ms=med(0), inference_ms=med(1), postprocess_ms=med(2),
               batch=batch, rounds=rounds, timed_runs=len(samples))
    inf = row['inference_ms']
    row['fps'] = round(1000.0 / inf, 2) if inf else None
    if row['preprocess_ms'] is not None:
        total = statistics.median([sum(s) for s in samples])
        row['e2e_ms'] = round(total, 3)
        row['e2e_fps'] = round(1000.0 / total, 2) if total > 0 else None


#: the largest AP change against torch fp32 a format of each precision may have (issue #20:
#: float runtimes 0.002, bf16 0.01, int8 0.02), checked by ``--check-ap`` on a trained model
AP_BOUNDS = {'fp32': 0.002, 'bf16': 0.01, 'int8': 0.02}


def ap_violations(rows, bounds=None):
    """One line per row whose ``|ap_delta|`` exceeds its precision's bound
    (:data:`AP_BOUNDS`), and per model row that has no AP although it should."""
    bounds = dict(AP_BOUNDS if bounds is None else bounds)
    bad = []
    for row in rows:
        if row.get('status') == LATENCY_ONLY or row['format'] is None:
            continue
        what = f'{row["model"]} {row["format"]} {row["precision"]}'
        if not str(row.get('status', '')).startswith(('ok', 'skipped')):
            bad.append(f'{what}: {row["status"]}')
        elif row.get('ap_delta') is not None and \
                abs(row['ap_delta']) > bounds.get(row['precision'], float('inf')):
            bad.append(f'{what}: AP {row["bbox_ap"]} is {row["ap_delta"]:+.4f} from torch fp32 '
                       f'(allowed {bounds[row["precision"]]})')
    return bad


def fill_ap_deltas(rows):
    """``ap_delta`` = the row's AP minus its model's ``torch-fp32`` AP (same config)."""
    ref = {r['config']: r['bbox_ap'] for r in rows
           if r['format'] == 'torch' and r['precision'] == 'fp32' and r.get('bbox_ap') is not None}
    for row in rows:
        base = ref.get(row['config'])
        row['ap_delta'] = (round(row['bbox_ap'] - base, 4)
                           if base is not None and row.get('bbox_ap') is not None else None)
    return rows


def profile_cases(cases, metas, images, threads, progress=print):
    """The backbone / neck / head / decode+NMS split (:mod:`mmext.benchmark.formats_profile`)
    of every live case with a runtime ``meta``, on the timing batch, into its row
    (``backbone_ms``, ``neck_ms``, ``head_ms``, ``decode_nms_ms``, ``profiled_ms``)."""
    from mmext.benchmark.formats_profile import PARTS, profile_split
    from mmext.deploy.detector_runtime import preprocess
    for i, (row, engine) in enumerate(cases):
        if engine is None or metas[i] is None or not str(row['status']).startswith('ok'):
            continue
        progress(f'profiling {case_label(row)}')
        x = np.concatenate([preprocess(img, metas[i])[0] for img in images])
        try:
            split = profile_split(f'{row["format"]}-{row["precision"]}', engine, x, threads)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001  (the row keeps its times)
            row['profile_error'] = error_line(exc, 200)
            continue
        if split:
            row.update({f'{p}_ms': split[p] for p in PARTS}, profiled_ms=split['total'])
    return cases


def run_cases(cases, metas, eval_set, mapping, images, shape, batch, rounds, warmup, iters,
              threads, progress=print, profile=True):
    """AP of every live case with a runtime ``meta`` on the evaluation images, then the
    interleaved timing (:func:`time_cases`) and, with ``profile``, the split of the time
    (:func:`profile_cases`); closes the engines. Returns ``(rows, order)``."""
    from mmext.benchmark.formats_data import bbox_ap
    order = []
    try:
        with threads_context(threads):
            for i, (row, engine) in enumerate(cases):
                if engine is None or metas[i] is None:
                    continue
                progress(f'evaluating {case_label(row)} on {len(images)} images')
                try:
                    preds = evaluate(engine, metas[i], images)
                    row.update(bbox_ap(eval_set, preds, mapping[row['config']]))
                    row['bbox_ap'] = round(row['bbox_ap'], 4)
                    row['bbox_ap50'] = round(row['bbox_ap50'], 4)
                    row['dets_per_img'] = round(float(np.mean([len(p['labels'])
                                                               for p in preds])), 1)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    row['status'] = f'failed: {error_line(exc, 200)}'
                    cases[i] = (row, None)
                    engine.close()
            timed = timing_images(images, shape, batch)
            time_cases(cases, metas, timed, batch, rounds, warmup, iters, order, progress)
            if profile:
                profile_cases(cases, metas, timed, threads, progress)
    finally:
        for _, engine in cases:
            if engine is not None:
                engine.close()
    rows = fill_ap_deltas([row for row, _ in cases])
    return rows, order


# ------------------------------------------------------------------------------ report
MD_COLUMNS = [('model', 'model'), ('format', 'format'), ('precision', 'precision'),
              ('status', 'status'), ('size_mb', 'size (MB)'), ('bbox_ap', 'bbox AP'),
              ('ap_delta', 'AP change'), ('preprocess_ms', 'pre ms'),
              ('inference_ms', 'inference ms'), ('postprocess_ms', 'post ms'),
              ('fps', 'FPS'), ('e2e_fps', 'FPS e2e'), ('note', 'note')]
SPLIT_COLUMNS = [('model', 'model'), ('format', 'format'), ('precision', 'precision'),
                 ('backbone_ms', 'backbone'), ('neck_ms', 'neck'), ('head_ms', 'head'),
                 ('decode_nms_ms', 'decode + NMS'), ('profiled_ms', 'profiled total'),
                 ('inference_ms', 'timed inference')]
META_KEYS = ('command', 'date', 'cpu', 'cpu_flags', 'load_avg', 'threads', 'shape', 'batch',
             'rounds', 'warmup', 'iters', 'data', 'images', 'ap_note', 'calib_images', 'torch',
             'onnxruntime', 'openvino', 'nncf', 'mmdet', 'peaks')


def load_avg():
    """The 1-minute load average (``None`` where the OS has none): on a shared machine it says
    how many other processes the timings competed with."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_flags():
    """The CPU's instruction-set flags that decide bf16 and int8 speed (``/proc/cpuinfo``)."""
    wanted = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
              'amx_int8')
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        return None
    return ' '.join(w for w in wanted if w in flags) or 'none of ' + ' '.join(wanted)


def to_markdown(rows, meta=None):
    lines = ['# Detector formats benchmark', '']
    for key in META_KEYS:
        if meta and meta.get(key) is not None:
            value = meta[key]
            lines.append(f'- {key}: `{value}`' if key == 'command' else f'- {key}: {value}')
    lines += ['', 'inference ms = the whole exported graph (network, box decoding, NMS) per '
              'image; pre = resize/pad (normalisation is in the graph); post = back to image '
              'pixels; FPS = 1000 / inference ms; FPS e2e counts pre and post too; AP change '
              '= the row\'s bbox AP minus its model\'s torch fp32 AP.', '']
    lines += markdown_table(rows, MD_COLUMNS)
    split = [r for r in rows if r.get('profiled_ms') is not None]
    if split:
        lines += ['', '## Where the time goes (ms per image)', '',
                  'Profiled after the timing, on the same batch: OpenVINO\'s per-node counters, '
                  'ONNX Runtime\'s profiler, timers around the PyTorch modules; nodes go to the '
                  'module whose scope they carry, the rest (priors, decoding, top-k, NMS) to '
                  'decode + NMS. Profilers add a little per node: compare the profiled total '
                  'with the timed inference.', '']
        lines += markdown_table(split, SPLIT_COLUMNS)
    bound = [r for r in rows if r.get('of_peak') is not None]
    if bound:
        from mmext.benchmark.formats_bound import BOUND_COLUMNS
        peaks = (meta or {}).get('peaks') or {}
        lines += ['', '## How close to this CPU\'s limit', '',
                  'floor ms = 2 x the model\'s multiply-adds (backbone, neck, head at this '
                  'shape) / the matrix-product peak of the row\'s precision measured in this '
                  'run (' + ', '.join(f'{k} {v} GOP/s' for k, v in peaks.items() if v) + '); '
                  'of peak = floor / inference: no runtime can go below the floor at that '
                  'precision.', '']
        lines += markdown_table(bound, BOUND_COLUMNS)
    return '\n'.join(lines) + '\n'


def write_results(rows, meta, json_path):
    """The JSON (``{'meta', 'rows'}``) and the markdown table beside it; returns the paths."""
    return write_json_and_markdown(rows, meta, json_path, markdown=to_markdown,
                                   default_name='detector_formats.json')


def check_rows(rows):
    """Every row has :data:`ROW_KEYS` (a bug otherwise)."""
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise MmextError(f'row {row.get("model")} {row.get("format")} lacks {missing}')
    return rows
