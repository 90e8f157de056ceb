"""``benchmark_formats``: a detector config in every deployment format, with anchors, in one run
(``tools/benchmark_formats.py``). The formats, the AP and the timing protocol are
:mod:`mmext.benchmark.formats`; this module builds the detectors, exports them with
:func:`mmext.apis.export_detector` (mmext.apis: the benchmark layer may not import it) and puts
everything into one table.

Rows: the config in each format, then each anchor config (mmdet's RTMDet-tiny by default, random
weights unless an anchor checkpoint is given) exported and run the same way, then each
``anchor_onnx`` file (e.g. Ultralytics' YOLO11n export) for latency only.
"""
import os
import os.path as osp
import re
import shutil
import tempfile

from mmext.benchmark.formats import RTMDET_TINY
from mmext.errors import ConfigError
from mmext.utils import error_line


def model_name(config):
    """A short name for the table: the config's file name without the schedule
    (``shvit_s1_rtmdet_tiny_4xb32-100e_coco.py`` -> ``shvit_s1_rtmdet_tiny``)."""
    stem = osp.splitext(osp.basename(str(config)))[0]
    return re.sub(r'_\d+xb\d+.*$', '', stem) or stem


def build_detector(config, checkpoint=None, cfg_options=None, seed=0):
    """``(detector, cfg)`` as :func:`mmext.apis.export_detector` builds it: the config's model
    (eval mode), ``checkpoint``'s weights read weights-only and checked to fit, else the random
    initialisation drawn after ``torch.manual_seed(seed)``."""
    import torch
    from mmext.apis.export_detector import _resolve_config
    from mmext.engine.checkpoint_check import check_state_dict_fits, read_training_checkpoint
    from mmext.engine.config import build_config_model
    from mmext.errors import CheckpointError
    torch.manual_seed(int(seed))
    detector, codebase, cfg = build_config_model(_resolve_config(config), cfg_options)
    if codebase != 'mmdet':
        raise ConfigError(f'{config} is an {codebase} config; the formats benchmark takes mmdet '
                          'single-stage detectors (RTMDet, YOLOX, RetinaNet).')
    if checkpoint is not None:
        if not osp.isfile(str(checkpoint)):
            raise CheckpointError(f'checkpoint {str(checkpoint)!r} does not exist.')
        state, _ = read_training_checkpoint(str(checkpoint))
        check_state_dict_fits(detector.state_dict(), state, repr(str(checkpoint)))
        detector.load_state_dict(state, strict=False)
    return detector.eval(), cfg


def export_model(config, checkpoint, shape, work_dir, cfg_options=None, seed=0, nms_pre=None):
    """``(wrapper, onnx_path, meta)``: the detector exported by :func:`export_detector` at
    ``shape`` into ``work_dir`` and the same weights as the eager module the export traces
    (random weights go to the export through a checkpoint file, so both have them)."""
    import copy

    import torch
    from mmext.apis.export_detector import export_detector
    from mmext.deploy.detector_export import DetectorWrapper, detector_settings, fuse_for_deploy
    from mmext.deploy.detector_runtime import read_metadata
    detector, cfg = build_detector(config, checkpoint, cfg_options, seed)
    stem = osp.splitext(osp.basename(str(config)))[0]
    if checkpoint is None:
        checkpoint = osp.join(work_dir, f'{stem}.random.pth')
        torch.save(dict(meta=dict(seed=int(seed)), state_dict=detector.state_dict()), checkpoint)
    path = osp.join(work_dir, f'{stem}.onnx')
    export_detector(config, checkpoint, path, input_size=tuple(shape), force=True,
                    cfg_options=cfg_options, nms_pre=nms_pre)
    settings = detector_settings(cfg, detector, tuple(shape), nms_pre=nms_pre)
    wrapper = DetectorWrapper(fuse_for_deploy(copy.deepcopy(detector)), settings).eval()
    return wrapper, path, read_metadata(path)


def model_gmacs(config, shape, cfg_options=None):
    """``(GMACs, None)`` of ``config``'s whole detector at ``shape`` (H, W), or
    ``(None, reason)`` when it cannot be counted."""
    from mmext.analysis.flops import config_complexity
    from mmext.apis.export_detector import _resolve_config
    try:
        result = config_complexity(_resolve_config(config), input_size=tuple(shape),
                                   part='model', cfg_options=cfg_options)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001  (a count that fails leaves the bound empty)
        return None, f'not counted: {error_line(exc, 160)}'
    return result['gmacs'], None


def benchmark_formats(config, checkpoint=None, out=None, data=None, shape=(640, 640), batch=1,
                      threads=1, rounds=3, warmup=2, iters=5, formats='all',
                      anchor_configs=(RTMDET_TINY,), anchor_checkpoints=(), anchor_onnx=(),
                      max_images=None, calib_images=16, work_dir=None, seed=0,
                      cfg_options=None, command=None, nms_pre=None, profile=True,
                      bounds=True, progress=print):
    """Benchmark ``config`` (+ ``checkpoint``; ``None``: random weights) in each of ``formats``
    beside the anchors; see :mod:`mmext.benchmark.formats` for what is measured.

    Args:
        out (str | None): the JSON to write (the markdown table beside it), checked before
            anything runs; ``None`` writes nothing.
        data (str | None): a COCO-format folder (or its ``instances_*.json``); default mmext's
            generated demo validation set.
        shape (tuple): ``(H, W)`` the export resizes to and the timing input's size.
        anchor_configs / anchor_checkpoints: configs exported and run like ``config``
            (``anchor_checkpoints[i]`` for ``anchor_configs[i]``, ``None``/missing: random).
        anchor_onnx: files another exporter wrote, timed for latency only.
        max_images (int): evaluate on the first ``max_images`` images only.
        calib_images (int): images (the first of the evaluation set) int8 is calibrated on.
        work_dir (str | None): where the exported and quantized files go (kept); default a
            temporary folder removed at the end.
        nms_pre (int | None): the exports' pairs per level before NMS (every model; see
            :func:`mmext.deploy.detector_export.deploy_nms_pre`).
        profile (bool): split each format's time into backbone / neck / head / decode + NMS
            (:mod:`mmext.benchmark.formats_profile`) after the timing.
        bounds (bool): count each model's GMACs at ``shape`` and measure this CPU's fp32 /
            bf16 / int8 matrix-product peaks (``threads``) before the timing; rows get
            ``gmacs``, ``floor_ms`` and ``of_peak`` (:mod:`mmext.benchmark.formats_bound`).

    Returns:
        dict: ``rows``, ``meta``, ``order`` (the timed cases, in the order their turns came),
        ``json``/``markdown`` (paths, when ``out`` was given).
    """
    from mmext.benchmark.environment import environment
    from mmext.benchmark.formats import (anchor_cases, calibration_batches, check_rows,
                                         check_settings, cpu_flags, failed_cases, load_avg,
                                         model_cases, resolve_formats, run_cases,
                                         write_results)
    from mmext.benchmark.formats_bound import fill_bounds
    from mmext.benchmark.formats_data import (demo_eval_set, find_coco, label_map,
                                              load_eval_set, read_images)
    from mmext.benchmark.peaks import measure_peaks
    from mmext.benchmark.report import output_paths
    from mmext.deploy.runners import module_version, threads_context

    shape = check_settings(tuple(shape), batch, threads, rounds, warmup, iters)
    formats = resolve_formats(formats)
    if isinstance(calib_images, bool) or not isinstance(calib_images, int) or calib_images < 1:
        raise ConfigError(f'--calib-images must be a positive integer, not {calib_images!r}.')
    if out is not None:
        output_paths(out, default_name='detector_formats.json')  # refused before any work
    anchor_configs = list(anchor_configs or ())
    anchor_checkpoints = list(anchor_checkpoints or ())
    if len(anchor_checkpoints) > len(anchor_configs):
        raise ConfigError(f'{len(anchor_checkpoints)} anchor checkpoints for '
                          f'{len(anchor_configs)} anchor configs.')
    for path in anchor_onnx or ():
        if not osp.exists(str(path)):
            raise ConfigError(f'--anchor-onnx {str(path)!r} does not exist.')

    own_dir = work_dir is None
    work_dir = tempfile.mkdtemp(prefix='mmext_formats_') if own_dir else str(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    try:
        if data is None:
            eval_set = demo_eval_set(osp.join(work_dir, 'demo_coco'), max_images)
            data_desc = 'mmext demo validation set (generated: 16 images, 256 px, 3 classes)'
        else:
            eval_set = load_eval_set(*find_coco(data), max_images=max_images)
            data_desc = str(data)
        images = read_images(eval_set)
        models = [(config, checkpoint)] + [
            (c, anchor_checkpoints[i] if i < len(anchor_checkpoints) else None)
            for i, c in enumerate(anchor_configs)]
        cases, metas, mapping, notes, gmacs, peaks = [], [], {}, {}, {}, None
        with threads_context(threads):
            for spec, ckpt in models:
                progress(f'exporting {spec} at {shape[0]}x{shape[1]}')
                try:
                    wrapper, path, meta = export_model(spec, ckpt, shape, work_dir,
                                                       cfg_options if spec == config else None,
                                                       seed, nms_pre)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001  (an anchor that fails is a row)
                    if spec == config:
                        raise
                    new = failed_cases(spec, model_name(spec), formats, exc)
                    cases += new
                    metas += [None] * len(new)
                    continue
                mapping[str(spec)], note = label_map(meta['classes'], eval_set['classes'])
                if note:
                    notes[str(spec)] = note
                if bounds:
                    gmacs[str(spec)], why = model_gmacs(
                        spec, shape, cfg_options if spec == config else None)
                    if why:
                        notes[f'{spec} GMACs'] = why
                calib = calibration_batches(images, meta, calib_images)
                new = model_cases(spec, model_name(spec), wrapper, path, formats, threads,
                                  calib, work_dir, progress)
                cases += new
                metas += [meta] * len(new)
            for path in anchor_onnx or ():
                new = anchor_cases(path, shape, batch, threads)
                cases += new
                metas += [None] * len(new)
        if bounds:
            progress(f'measuring this CPU\'s matrix-product peaks ({threads} thread(s))')
            peaks = measure_peaks(threads=threads)
        load_start = load_avg()
        rows, order = run_cases(cases, metas, eval_set, mapping, images, shape, batch, rounds,
                                warmup, iters, threads, progress, profile=profile)
        if bounds:
            fill_bounds(rows, gmacs, peaks)
        check_rows(rows)
    finally:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    env = environment()
    meta = dict(
        command=command, date=env['date'], cpu=env['cpu'], cpu_flags=cpu_flags(),
        load_avg=f'{load_start} before evaluating and timing, {load_avg()} after (1 min)',
        threads=threads, shape=f'{shape[0]}x{shape[1]}', batch=batch, rounds=rounds,
        warmup=warmup, iters=iters,
        data=data_desc, images=len(images), calib_images=min(calib_images, len(images)),
        ap_note='; '.join(f'{k}: {v}' for k, v in notes.items()) or None,
        torch=env['torch'], onnxruntime=env['onnxruntime'],
        openvino=module_version('openvino'), nncf=module_version('nncf'),
        mmdet=module_version('mmdet'), python=env['python'], malloc=env.get('malloc'),
        seed=seed, nms_pre=nms_pre, checkpoint=None if checkpoint is None else str(checkpoint),
        timing_order=order, work_dir=None if own_dir else work_dir,
        peaks=None if peaks is None else {k: peaks.get(k) for k in ('fp32', 'bf16', 'int8')})
    result = dict(rows=rows, meta=meta, order=order)
    if out is not None:
        result['json'], result['markdown'] = write_results(rows, meta, out)
    return result
