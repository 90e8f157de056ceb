"""``tools/predict.py``: run a detector on images, folders, glob patterns and videos, as
``yolo predict`` does, and write annotated images/videos and mmdet ``DetInferencer``-style JSON.

The model is either

* an mmdet config (a file, or ``mmext::retinanet/...``) with a checkpoint training wrote: the
  detector is built as ``mmdet.apis.init_detector`` builds it (after ``import mmext``, so
  mmext's backbones are registered) and the checkpoint is read once, weights-only
  (:func:`mmext.checkpoints.loading.read_checkpoint`), checked to fit the model (every weight
  there with its shape; a fused/unfused mismatch is named) and loaded; its ``dataset_meta``
  gives the class names (else the config's test dataset, else COCO's). ``fuse`` folds the
  backbone (``switch_to_deploy()``) after loading; ``bf16`` runs backbone and neck in bfloat16
  (:class:`mmext.engine.precision.Bf16Parts`; native bf16 only);
* or a file exported by ``tools/export_detector.py`` (``.onnx``; or its OpenVINO int8 IR
  ``.xml`` from :func:`mmext.deploy.detector_openvino.quantize_openvino`), run by ONNX Runtime or
  OpenVINO through :class:`mmext.deploy.detector_runtime.DetectorSession` (the contract's
  ``preprocess``/``run``/``postprocess``).

Each image (or video frame) is timed in three parts with ``time.perf_counter`` (on a GPU after a
synchronisation), as Ultralytics reports them:

* ``preprocess``: the config's test pipeline (resize, pad, pack) and the model's data
  preprocessor (normalise, batch) -- for an export, the contract's ``preprocess``; decoding the
  file is not counted;
* ``inference``: the network. For a single-stage detector whose ``predict`` is mmdet's own
  (RetinaNet, RTMDet, YOLOX, ...): backbone, neck and head forward; for others (Mask R-CNN)
  the whole ``model.predict``, NMS included; for an export the session's ``run``;
* ``postprocess``: box decoding, NMS and rescaling to the image (single-stage; ``predict_by_feat``)
  or the export's ``postprocess``, and the results turned into arrays with ``score_thr`` applied.

Drawing and writing files are not counted. One untimed warm-up inference runs on the first
input (``warmup``). The summary line reads ``Speed: 3.1ms preprocess, 41.2ms inference, 1.0ms
postprocess per image at shape (1, 3, 640, 640)`` (the shape of the last input).

Outputs under ``out_dir`` (default ``outputs/predict``): ``vis/<name>`` (the image with boxes,
class names and scores, masks for instance-segmentation models; ``vis/<stem>.mp4`` for a video,
same fps and size, every frame) and ``preds/<stem>.json``: for an image mmdet's
``DetInferencer`` format, ``{"labels": [...], "scores": [...], "bboxes": [[x1, y1, x2, y2],
...]}`` (plus ``"masks"`` as COCO RLE for mask models) in original-image pixels; for a video
``{"video": name, "fps": fps, "frames": [{"frame": 0, "labels": ..., ...}, ...]}``, one entry per
frame index. Only detections scoring above ``score_thr`` (default 0.3, ``DetInferencer``'s
drawing threshold) are drawn and written (``score_thr=0`` keeps everything the model returns).
An existing output file is never replaced silently: a run whose outputs exist is refused before
any work unless ``force=True`` (``--force``); every file is written whole (temporary file,
renamed into place) with the permissions of any file the user creates.

mmdet's own inferencer works with mmext's configs as well, once ``import mmext`` has registered
the backbones::

    import mmext  # noqa: F401
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model='configs/retinanet/shvit_s1_fpn_1x_coco.py',
                               weights='work_dirs/.../epoch_12.pth', device='cpu')
    inferencer('demo.jpg', out_dir='outputs/mmdet')

(it loads the checkpoint through mmengine; on torch >= 2.6 ``import mmext`` lets mmengine's
checkpoint types through torch's weights-only loading).
"""
import contextlib
import os
import os.path as osp
import time

import numpy as np

from mmext.apis import predict_io as io
from mmext.apis.predict_models import is_exported, load_detector
from mmext.errors import ConfigError

DEFAULT_OUT_DIR = osp.join('outputs', 'predict')
DEFAULT_SCORE_THR = 0.3
PARTS = ('preprocess', 'inference', 'postprocess')
JSON_KEYS = ('labels', 'scores', 'bboxes', 'masks')


# --------------------------------------------------------------------------------- the loop
def to_json(pred):
    """``DetInferencer.pred2dict``'s lists (masks as COCO RLE)."""
    out = dict(labels=pred['labels'].tolist(), scores=pred['scores'].tolist(),
               bboxes=pred['bboxes'].tolist())
    if 'masks' in pred:
        from mmdet.structures.mask import encode_mask_results
        rles = encode_mask_results(pred['masks'])
        for rle in rles:
            if isinstance(rle['counts'], bytes):
                rle['counts'] = rle['counts'].decode()  # novm (bytes.decode)
        out['masks'] = rles
    return out


class _Timer:
    def __init__(self):
        self.ms = {p: [] for p in PARTS}
        self.shape = None

    def add(self, times, shape):
        for part, t in zip(PARTS, times):
            self.ms[part].append(t)
        self.shape = shape

    def summary(self):
        return {p: (float(np.mean(v)) if v else 0.0) for p, v in self.ms.items()}


def _run_one(detector, img, score_thr, timer):
    t0 = time.perf_counter()
    batch, shape = detector.preprocess(img)
    t1 = time.perf_counter()
    out = detector.infer(batch)
    t2 = time.perf_counter()
    pred = detector.postprocess(out, batch, score_thr)
    t3 = time.perf_counter()
    times = tuple(1000.0 * t for t in (t1 - t0, t2 - t1, t3 - t2))
    timer.add(times, shape)
    return pred, dict(zip(PARTS, times)), shape


def _predict_source(detector, src, targets, score_thr, colors, timer, bar, warm):
    """Predict one image or every frame of one video; returns its prediction dicts."""
    records, sink, reader = [], None, None
    if src.kind == 'image':
        frames = [(None, io.read_image(src.path))]
    else:
        reader = io.VideoReader(src.path)
        frames = reader
        if targets['vis']:
            sink = io.VideoSink(targets['vis'], reader.fps)
    ok = False
    try:
        for index, img in frames:
            if not warm[0]:  # untimed: lazy initialisation (oneDNN primitives, allocations)
                detector.infer(detector.preprocess(img)[0])
                warm[0] = True
            pred, speed, shape = _run_one(detector, img, score_thr, timer)
            record = to_json(pred)
            if targets['vis']:
                drawn = io.draw_detections(img, pred, detector.classes, colors)
                if sink is not None:
                    sink.write(drawn)
                else:
                    io.write_image(targets['vis'], drawn)
            if src.kind == 'image' and targets['pred']:
                io.write_json(targets['pred'], record)
            records.append(dict(path=src.path, frame=index, speed=speed, shape=list(shape),
                                **record))
            bar.update(1)
        ok = True
    finally:
        if sink is not None:
            sink.close(ok=ok)
        if reader is not None:
            reader.close()
    if src.kind == 'video' and targets['pred']:
        frames_json = [dict(frame=r['frame'], **{k: r[k] for k in r if k in JSON_KEYS})
                       for r in records]
        io.write_json(targets['pred'], dict(video=src.name, fps=reader.fps, frames=frames_json))
    return records


def run_predict(detector, sources, plan, score_thr=DEFAULT_SCORE_THR, progress=True,
                warmup=True):
    """Predict every image/frame of ``sources`` with ``detector``, writing ``plan``'s files.

    Returns ``(predictions, timer)``: one dict per image or frame (``path``, ``frame``,
    ``labels``/``scores``/``bboxes`` lists, ``speed`` in ms, input ``shape``)."""
    total = sum(1 if s.kind == 'image' else s.frames for s in sources)
    colors = io.class_colors(len(detector.classes), detector.palette)
    bar = io.progress_bar(total, progress)
    timer, predictions, warm = _Timer(), [], [not warmup]
    try:
        with detector.context():
            for src in sources:
                predictions += _predict_source(detector, src, plan[src], score_thr, colors,
                                               timer, bar, warm)
    finally:
        bar.close()
    return predictions, timer


def speed_line(speed, shape):
    return (f'Speed: {speed["preprocess"]:.1f}ms preprocess, {speed["inference"]:.1f}ms '
            f'inference, {speed["postprocess"]:.1f}ms postprocess per image at shape '
            f'{tuple(shape) if shape else None}')


def predict(model, source, checkpoint=None, out_dir=DEFAULT_OUT_DIR, score_thr=DEFAULT_SCORE_THR,
            device=None, cfg_options=None, fuse=False, bf16=False, backend='onnxruntime',
            precision='fp32', threads=None, save_vis=True, save_pred=True, force=False,
            progress=True, warmup=True, verbose=True):
    """Detect objects in images, folders, glob patterns and videos (module docstring).

    Args:
        model (str): an mmdet config (with ``checkpoint``) or an exported ``.onnx`` detector.
        source (str | list[str]): image/video files, folders, glob patterns.
        checkpoint (str): the config's trained weights (a path or URL).
        out_dir (str): where ``vis/`` and ``preds/`` go (default ``outputs/predict``).
        score_thr (float): detections scoring above it are drawn and written (default 0.3).
        device (str): torch device (default ``cuda:0`` if available, else ``cpu``).
        cfg_options (dict): config overrides (``--cfg-options``).
        fuse (bool): fold the backbone (``switch_to_deploy()``) after loading.
        bf16 (bool): backbone and neck in bf16 (a config; native bf16 only), or the export's
            bf16 precision (OpenVINO).
        backend (str): ``'onnxruntime'`` or ``'openvino'`` for an exported model.
        precision (str): ``'fp32'``, ``'bf16'`` or ``'int8'`` for an exported model.
        threads (int): CPU threads (torch's intra-op threads; the session's for an export).
        save_vis, save_pred (bool): write the annotated images/videos, the JSON files.
        force (bool): replace existing output files (else a run whose outputs exist is refused).
        progress (bool): show a progress bar on stderr.
        warmup (bool): one untimed inference before the first timed one.
        verbose (bool): print the speed summary and where the results went.

    Returns:
        dict: ``predictions`` (one dict per image or video frame: ``path``, ``frame`` (None for
        an image), ``labels``, ``scores``, ``bboxes``, ``speed`` (ms per part), ``shape``),
        ``speed`` (mean ms of ``preprocess``/``inference``/``postprocess``), ``shape`` (the
        last input's), ``classes``, ``out_dir``, ``files`` (the files written).
    """
    if score_thr is None:
        score_thr = DEFAULT_SCORE_THR
    if not 0 <= score_thr <= 1:
        raise ConfigError(f'score_thr (--score-thr) is a score between 0 and 1, not {score_thr}.')
    if threads is not None and threads < 1:
        raise ConfigError(f'threads (--threads) must be at least 1, not {threads}.')
    sources = io.collect_sources(source)
    out_dir = osp.abspath(osp.expanduser(os.fspath(out_dir or DEFAULT_OUT_DIR)))
    plan = io.plan_outputs(sources, out_dir, save_vis, save_pred, force)
    io.probe_videos(sources)  # an unreadable video is refused before the model is loaded
    if not is_exported(model) and threads:
        from mmext.deploy.runners import threads_context
        threads_ctx = threads_context(threads)
    else:
        threads_ctx = contextlib.nullcontext()
    with threads_ctx:
        detector = load_detector(model, checkpoint, device, cfg_options, fuse, bf16, backend,
                                 precision, threads)
        try:
            io.prepare_folders(plan)
            predictions, timer = run_predict(detector, sources, plan, score_thr, progress,
                                             warmup)
        finally:
            detector.close()
    speed = timer.summary()
    files = [p for entry in plan.values() for p in entry.values() if p and osp.isfile(p)]
    if verbose:
        print(speed_line(speed, timer.shape))
        print(f'Results saved to {out_dir}' if files else 'No files written '
              '(--no-save-vis and --no-save-pred).')
    return dict(predictions=predictions, speed=speed, shape=timer.shape,
                classes=detector.classes, out_dir=out_dir, files=files)
