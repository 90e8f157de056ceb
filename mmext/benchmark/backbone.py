"""The backbone benchmark: every arch x protocol x mode, timm's model side by side.

Only torch and mmengine are needed (timm, torchvision and onnxruntime are used when installed), so
the same code runs on a CPU box and on a GPU machine that has no mmcv/mmdet. The protocols and
backbones are in :mod:`mmext.benchmark.protocols`, the modes in :mod:`mmext.deploy.runners`.

A combination that cannot run here gives a row whose ``status`` says ``skipped: <why>``; one that
breaks gives ``failed: <error>``; the run goes on either way.

Timing (:mod:`mmext.benchmark.timing`): ``warmup`` untimed runs, then ``iters`` timed runs; rows
give every time (``times_ms``), the median, min and max in milliseconds and
``batch * 1000 / median`` images per second. Weights are random (speed does not depend on them);
inputs are generated demo images (see :func:`_input`). With ``check=True`` each non-eager mode's
outputs are compared with eager ones on the same input (``max_rel_err``). With ``rounds=R`` an arch's modes take turns, ``R`` rounds of ``iters`` runs
each, pooled per mode: on a shared machine whose speed drifts, mode-to-mode ratios stay fair.

timm side by side: where timm is importable and has the model, it is timed in the same run: the
classifier for throughput protocols, ``features_only=True`` for latency protocols, eager (fp16
autocast where the protocol uses it). mmext rows then carry ``timm_ms`` and ``ratio_vs_timm``
(mmext / timm median; below 1 is faster). A timm model that cannot run at a size gives a
``failed: fails at this size ...`` row. A ResNet-50 row (timm's, else torchvision's) is added as a
reference where either library is installed.

Peaks and efficiency (:mod:`mmext.benchmark.peaks`): before timing, the run measures this
machine's fp32, bf16 and int8 GEMM peaks with each CPU protocol's thread count (``meta['peaks']``
of the JSON); every ok mmext row then gives ``macs`` (per image, :func:`mmext.analysis.count_macs`
at the row's input), ``gflops_s`` (2 FLOP per MAC x batch / median time), ``precision`` and
``peak_fraction`` (``gflops_s`` over the peak of its precision). int8 rows add the cosine
similarity of each output map with eager fp32 (``cosine``, ``cosine_min``).

``tiny=True`` shrinks every protocol (batch 2, 64x64, 1 warm-up, 3 timed runs) for tests.
"""
import functools

import torch

from mmext.benchmark.peaks import gemm_runners, gflops_per_s, measure_peaks, mode_precision
from mmext.benchmark.environment import environment
from mmext.benchmark.models import _timm, build_mmext, build_reference, build_timm
from mmext.benchmark.protocols import (REFERENCE, TINY, modes_for_device, resolve_archs,
                                       resolve_modes, resolve_protocols)
from mmext.benchmark.timing import failure_status, free_cuda, time_cases
from mmext.deploy.runners import (autocast, cudnn_benchmark, make_runner, skip_reason,
                                  threads_context)
from mmext.errors import ConfigError
from mmext.utils import max_rel_err, output_list


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




def prepare_case(model, mode, protocol, settings, env, arch_name, source='mmext', ref=None,
                 compile_kwargs=None, tmp_dir=None, calib=None):
    """A row and a :class:`Runner` for ``model`` in ``mode`` (``None`` when skipped or broken,
    the row's ``status`` then says why); ``ref`` (eager outputs) fills ``max_rel_err``."""
    row = _base_row(arch_name, source, mode, protocol, settings, env)
    reason = skip_reason(mode, protocol.device)
    if reason:
        row['status'] = f'skipped: {reason}'
        return row, None
    runner = None
    try:
        with threads_context(settings['threads']), cudnn_benchmark(protocol.device):
            x = _input(settings, protocol.device)
            runner = make_runner(model, mode, x, amp=settings['amp'],
                                 threads=settings['threads'], compile_kwargs=compile_kwargs,
                                 tmp_dir=tmp_dir, calib=calib)
            if ref is not None:
                out = runner.run()
                row['max_rel_err'] = max_rel_err(ref, out)
                if mode_precision(mode) == 'int8':
                    from mmext.deploy.quantize import cosine_per_map
                    row['cosine'] = [round(c, 6) for c in cosine_per_map(ref, out)]
                    row['cosine_min'] = min(row['cosine'])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001  (one broken case must not end the benchmark)
        row['status'] = failure_status(exc)
        if runner is not None:
            runner.close()
        free_cuda()
        return row, None
    return row, runner




def _input(settings, device):
    """The input batch: generated demo images (:mod:`mmext.demo`, 16 distinct ones repeated to
    fill the batch), normalised like mmext's configs, from another seed than the int8
    calibration images; random normal values where OpenCV is missing (a GPU box without mmcv).
    Images, not noise, so that accuracy checks (``max_rel_err``, int8 ``cosine``) see image
    statistics; speed does not depend on the values (up to kernels with value-dependent paths)."""
    h, w = settings['size']
    images = _demo_images(h, w)
    if images is None:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(settings['batch'], 3, h, w, generator=gen).to(device)
    index = [i % len(images) for i in range(settings['batch'])]
    return torch.from_numpy(images[index]).to(device)


@functools.lru_cache(maxsize=4)
def _demo_images(h, w):
    try:
        import cv2  # noqa: F401
    except ImportError:
        return None
    from mmext.deploy.quantize import calibration_images
    return calibration_images((h, w), num=16, seed=1)


def _eager_reference(model, protocol, settings):
    device = protocol.device
    with threads_context(settings['threads']):
        x = _input(settings, device)
        with torch.inference_mode(), autocast(device, settings['amp']):
            out = model.to(device).eval()(x)
    return [t.detach().float().cpu() for t in output_list(out)]


# ------------------------------------------------------------------------------------ the run
def run_benchmark(archs=None, protocols=None, modes=None, tiny=False, warmup=None, iters=None,
                  threads=None, amp=None, batch=None, compare_timm=True, reference=True,
                  check=True, compile_kwargs=None, progress=True, tmp_dir=None, seed=0,
                  rounds=1, calib=None, peaks=True, peak_n=2048, meta=None):
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
        calib (dict): int8 calibration, ``dict(folder=None, num=16, method='minmax')``.
        peaks (bool): measure the GEMM peaks (``peak_n`` cubed) and give rows ``peak_fraction``.
        meta (dict): filled with ``peaks`` (per device and thread count) when given.

    ``modes='all'`` runs every mode this machine supports on each protocol's device.
    """
    from mmengine.logging import print_log
    check_counts(warmup=warmup, iters=iters, threads=threads, batch=batch, rounds=rounds)
    arch_list = resolve_archs(archs)
    proto_list = resolve_protocols(protocols)
    resolve_modes(modes)  # an unknown mode is an error before anything runs
    env = environment()
    timm = _timm() if compare_timm else None
    overrides = dict(tiny=tiny, warmup=warmup, iters=iters, threads=threads, amp=amp,
                     batch=batch)

    plan = []  # (arch, protocol, modes)
    for arch in arch_list:
        for protocol in proto_list:
            plan.append((arch, protocol, modes_for_device(modes, protocol.device)))
    peak_table = _measure_peaks(proto_list, overrides, peak_n, progress) if peaks else {}
    if meta is not None and peak_table:
        meta['peaks'] = peak_table
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
                    row['status'] = failure_status(exc)
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
                              compile_kwargs=compile_kwargs, tmp_dir=tmp_dir, calib=calib)
                 for mode in modes_here]
        if timm is not None and arch.timm:  # timed in the same rounds as mmext's modes
            cases.append(_other_case(lambda f: build_timm(arch.timm, f, seed), 'timm',
                                     arch.name, protocol, settings, env))
        gemms = {}
        if peak_table and protocol.device in _available_devices():
            gemms = gemm_runners(protocol.device, settings['threads'], peak_n)
            cases += [(dict(batch=1, mode=k, status='ok'), r) for k, r in gemms.items()]
        timed = time_cases(cases, protocol, settings, rounds)
        same_rounds = {}
        for (name, runner), row in zip(gemms.items(), timed[len(timed) - len(gemms):]):
            if row['status'] == 'ok' and row.get('median_ms'):
                same_rounds[name] = round(runner.info['gflop'] / (row['median_ms'] / 1000), 2)
        timed = timed[:len(timed) - len(gemms)]
        if same_rounds and meta is not None:
            meta.setdefault('peaks_same_rounds', []).append(
                dict(arch=arch.name, protocol=protocol.name, n=peak_n, **same_rounds))
        for i, row in enumerate(timed):
            if i == len(modes_here):
                _say_sizefailure_status(row)
            else:
                if modes_here[i] == 'eager' and ref is not None and row['status'] == 'ok':
                    row['max_rel_err'] = 0.0
                add_efficiency(row, model, peak_table, same_rounds)
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


def check_counts(**counts):
    """Reject counts that cannot make a benchmark (``iters=0``, ``batch=-1`` ...)."""
    minimum = dict(warmup=0, iters=1, threads=1, batch=1, rounds=1, calib_images=1)
    for key, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[key]:
            raise ConfigError(f'{key} must be an integer >= {minimum[key]} (got {value!r}).')


def peak_key(device, threads):
    return f'{device}:{threads or "default"}'


def _measure_peaks(proto_list, overrides, n, progress):
    from mmengine.logging import print_log
    table = {}
    for protocol in proto_list:
        if protocol.device not in _available_devices():
            continue
        threads = overrides['threads'] or protocol.threads
        key = peak_key(protocol.device, threads if protocol.device == 'cpu' else None)
        if key not in table:
            table[key] = measure_peaks(protocol.device, threads, n=n)
            if progress:
                p = table[key]
                print_log(f'GEMM peaks ({key}, {n}^3): fp32 {p["fp32"]} GFLOP/s, bf16 '
                          f'{p["bf16"]} GFLOP/s, int8 {p["int8"]} GOP/s', logger='current')
    return table


_MACS = {}


def row_macs(model, arch_name, height, width):
    """MACs per image of ``model`` at ``height x width`` (cached per arch and size)."""
    key = (arch_name, height, width)
    if key not in _MACS:
        from mmext.benchmark.complexity import count_macs
        with threads_context(None):
            _MACS[key] = int(count_macs(model.cpu(), (1, 3, height, width)))
    return _MACS[key]


def add_efficiency(row, model, peak_table, same_rounds=None):
    """Fill ``macs``, ``gflops_s``, ``precision``, ``peak_gflops_s`` and ``peak_fraction``.

    The peak is the GEMM of the row's precision timed in the same rounds (``same_rounds``,
    ``{precision: GFLOP/s}``) where there is one, else the run's start-up peak (``peak_table``);
    ``peak_source`` says which."""
    if row['status'] != 'ok' or row['source'] != 'mmext':
        return row
    row['precision'] = mode_precision(row['mode'], row['amp'])
    try:
        row['macs'] = row_macs(model, row['arch'], row['height'], row['width'])
    except Exception:  # noqa: BLE001  (a model the tracer cannot count keeps its timing)
        return row
    gflops = gflops_per_s(row['macs'], row['batch'], row['median_ms'])
    row['gflops_s'] = None if gflops is None else round(gflops, 2)
    peaks = peak_table.get(peak_key(row['device'], row['threads'] if row['device'] == 'cpu'
                                    else None), {})
    peak = (same_rounds or {}).get(row['precision'])
    row['peak_source'] = 'same rounds' if peak else 'start of run'
    if not peak:
        peak = peaks.get(row['precision'])
    row['peak_gflops_s'] = peak
    row['peak_fraction'] = round(gflops / peak, 4) if gflops and peak else None
    return row


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
        row['status'] = failure_status(exc)
        return row, None
    row, runner = prepare_case(model, 'eager', protocol, settings, env, arch_name, source=source)
    row['timm_model' if source == 'timm' else 'reference_model'] = (
        'features_only' if features else 'classifier')
    return row, runner


def _say_sizefailure_status(row):
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
    return _say_sizefailure_status(time_cases([case], protocol, settings)[0])


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

