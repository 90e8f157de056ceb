"""A whole single-stage detector to ONNX: normalisation, backbone, neck, head, priors, box
decoding, ``nms_pre``/``score_thr`` filtering and NMS in one graph (the file format of
``docs``' detector contract: input ``input (N, 3, H, W)`` BGR 0-255, outputs ``dets (N, K, 5)``
and ``labels (N, K)``, metadata ``mmext``).

* :func:`detector_settings` -- what the config says about test-time sizes, normalisation,
  thresholds (``model.test_cfg``, the test pipeline's ``Resize``/``Pad``, the data
  preprocessor); these become the file's metadata;
* :class:`DetectorWrapper` -- the exported module (also runs eagerly: its NMS has a PyTorch
  forward);
* :func:`export_detector_model` -- trace it to a temporary ``.onnx``, embed the metadata, check
  ONNX Runtime's detections against the wrapper's on fixed images, then rename into place.

Loading a config and a checkpoint is :func:`mmext.apis.export_detector` (layering: deploy does not
import mmext.engine).
"""
import copy
import json
import os
import os.path as osp
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

from mmext.checkpoints.files import check_output_file, normal_mode
from mmext.compat.onnx_export import onnx_export
from mmext.deploy.detector_heads import head_candidates
from mmext.deploy.detector_nms import batched_nms_fixed
from mmext.deploy.export import _temp_path, _tracer_warning_lines, choose_exporter, ort_session
from mmext.errors import ConfigError, MmextError
from mmext.utils import error_line

INPUT_NAME = 'input'
OUTPUT_NAMES = ('dets', 'labels')
METADATA_KEY = 'mmext'
#: K when the config's test_cfg has no max_per_img (mmdet's YOLOX keeps every box; COCO
#: evaluation reads 100 per image)
DEFAULT_MAX_PER_IMG = 100
#: the exported graph's ``nms_pre`` when the caller gives none: the config's value, at most this.
#: mmdet's RTMDet/RetinaNet configs keep 30000 / 1000 (prior, class) pairs per level before NMS;
#: a top-k of 30000 out of the stride-8 level's 6400 x 80 pairs alone took 17 ms of a 95 ms
#: OpenVINO bf16 forward at 640 x 640 (1 thread, AMD EPYC Zen 4), top-1000 1.8 ms. mmdeploy's
#: RTMDet deploy configs cut it likewise (pre_top_k 5000). ``nms_pre=-1``: the config's value.
DEPLOY_NMS_PRE = 1000
_RESIZE_TYPES = ('Resize', 'FixScaleResize')


# ------------------------------------------------------------------------------ settings
def _type_name(step):
    return str(step.get('type', '')).split('.')[-1]


def test_pipeline(cfg):
    """The test pipeline (list of dicts): ``test_dataloader.dataset.pipeline`` or
    ``test_pipeline``."""
    loader = cfg.get('test_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while 'pipeline' not in dataset and isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']  # wrapped datasets
    pipeline = dataset.get('pipeline') or cfg.get('test_pipeline') or []
    return [dict(step) for step in pipeline]


def _three(value, what):
    if isinstance(value, (int, float)):
        return [float(value)] * 3
    values = [float(v) for v in value]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f'{what} must be one number or three, not {value!r}')
    return values


def deploy_nms_pre(config_nms_pre, nms_pre=None):
    """The ``nms_pre`` the graph keeps: ``nms_pre`` if given (``-1``: the config's), else the
    config's value capped at :data:`DEPLOY_NMS_PRE` (a config without one keeps every pair)."""
    config_nms_pre = int(config_nms_pre)
    if nms_pre is None:
        return min(config_nms_pre, DEPLOY_NMS_PRE) if config_nms_pre > 0 else config_nms_pre
    nms_pre = int(nms_pre)
    if nms_pre == -1:
        return config_nms_pre
    if nms_pre <= 0:
        raise ConfigError(f'nms_pre must be a positive number of (prior, class) pairs per level, '
                          f'or -1 for the config\'s ({config_nms_pre}); not {nms_pre}.')
    return nms_pre


def detector_settings(cfg, detector, input_size=None, nms_pre=None):
    """The export settings (and metadata) the config gives, as a plain dict.

    ``input_size`` ``(H, W)`` overrides the test pipeline's ``Resize`` scale; ``nms_pre`` the
    pairs per level kept before NMS (:func:`deploy_nms_pre`; ``config_nms_pre`` keeps the
    config's). ``pad_value`` is
    per input channel (BGR, pixel units): the pipeline's ``Pad`` value if it pads, else the data
    preprocessor's ``pad_value`` (applied after normalisation by mmdet) in pixel units.
    """
    pipeline = test_pipeline(cfg)
    resize = next((s for s in pipeline if _type_name(s) in _RESIZE_TYPES), None)
    pad = next((s for s in pipeline if _type_name(s) == 'Pad'), None)
    keep_ratio = bool(resize.get('keep_ratio', False)) if resize else True
    if input_size is None:
        scale = resize.get('scale') if resize else None
        if scale is None:
            raise ConfigError('the config\'s test pipeline has no Resize with a scale; give the '
                              'input size to export at (--shape H W / input_size=(H, W)).')
        if isinstance(scale, (int, float)):
            scale = (scale, scale)
        input_size = (int(scale[1]), int(scale[0]))  # mmcv scales are (w, h)
    input_size = [int(v) for v in input_size]
    if len(input_size) != 2 or min(input_size) <= 0:
        raise ConfigError(f'input size must be (H, W) of two positive integers, not {input_size}')
    dp = dict(cfg.model.get('data_preprocessor') or {})
    mean = dp.get('mean')
    std = dp.get('std')
    bgr_to_rgb = bool(dp.get('bgr_to_rgb', False) or dp.get('rgb_to_bgr', False))
    if mean is not None:
        mean = _three(mean, 'data_preprocessor.mean')
        std = _three(std if std is not None else 1.0, 'data_preprocessor.std')
    if pad is not None:
        value = pad.get('pad_val', 0)
        if isinstance(value, dict):
            value = value.get('img', 0)
        pad_value = _three(value, 'Pad pad_val')
    else:
        value = float(dp.get('pad_value', 0))
        if mean is not None:  # mmdet pads after normalising: value * std + mean in pixels
            pad_value = [value * s + m for m, s in zip(mean, std)]
            if bgr_to_rgb:
                pad_value = pad_value[::-1]  # mean/std are in the flipped order
        else:
            pad_value = [value] * 3
    test_cfg = dict(cfg.model.get('test_cfg') or getattr(detector.bbox_head, 'test_cfg', None)
                    or {})
    nms = dict(test_cfg.get('nms') or {})
    nms_type = str(nms.get('type', 'nms')).split('.')[-1]
    if nms_type != 'nms':
        raise ConfigError(f"test_cfg.nms type {nms.get('type')!r} is not exported; only 'nms' "
                          '(hard NMS) is.')
    max_per_img = test_cfg.get('max_per_img')
    graph_nms_pre = deploy_nms_pre(test_cfg.get('nms_pre', -1), nms_pre)
    divisor = int(dp.get('pad_size_divisor', 1) or 1)
    if pad is not None:
        divisor = max(divisor, int(pad.get('size_divisor') or 1))
        if pad.get('size') is not None or pad.get('pad_to_square'):
            # mmdet pads to a fixed size (e.g. RTMDet's 640 x 640); padding to the largest
            # stride instead gives the neck maps whose 2x upsampling lines up, at any size
            strides = getattr(getattr(detector.bbox_head, 'prior_generator', None), 'strides',
                              None) or [(32, 32)]
            divisor = max(divisor, max(int(max(s)) if isinstance(s, (tuple, list)) else int(s)
                                       for s in strides))
    return dict(
        mean=mean, std=std, bgr_to_rgb=bgr_to_rgb,
        pad_size_divisor=divisor,
        pad_value=[float(v) for v in pad_value],
        input_size=input_size, keep_ratio=keep_ratio,
        score_thr=float(test_cfg.get('score_thr', 0)),
        iou_threshold=float(nms.get('iou_threshold', 0.5)),
        max_per_img=int(max_per_img if max_per_img else DEFAULT_MAX_PER_IMG),
        nms_pre=graph_nms_pre,
        config_nms_pre=int(test_cfg.get('nms_pre', -1)),
        min_bbox_size=float(test_cfg.get('min_bbox_size', -1)),
        class_agnostic=bool(nms.get('class_agnostic', test_cfg.get('class_agnostic', False))),
        test_cfg=dict(test_cfg, nms_pre=graph_nms_pre))


def model_names(cfg, detector):
    """``(detector, backbone)`` display names, e.g. ``('RTMDet', 'SHViT-s1')``."""
    backbone = dict(cfg.model.get('backbone') or {})
    name = str(backbone.get('type', type(detector.backbone).__name__)).split('.')[-1]
    arch = backbone.get('arch')
    if isinstance(arch, str):
        name = f'{name}-{arch}'
    return type(detector).__name__, name


# ------------------------------------------------------------------------------ the module
def fuse_for_deploy(detector):
    """Fold what mmext's backbone (and neck) fold for inference (``switch_to_deploy``)."""
    for part in ('backbone', 'neck'):
        module = getattr(detector, part, None)
        if module is not None and hasattr(module, 'switch_to_deploy'):
            module.switch_to_deploy()
    return detector


def check_single_stage(detector):
    if not hasattr(detector, 'bbox_head') or not hasattr(detector, 'extract_feat'):
        raise ConfigError(f'{type(detector).__name__} is not a single-stage detector; the '
                          'detector export supports RTMDet, YOLOX and RetinaNet heads.')
    head_candidates(detector.bbox_head, {})  # an unsupported head is refused here


class DetectorWrapper(nn.Module):
    """``input (N, 3, H, W)`` -> ``dets (N, K, 5)``, ``labels (N, K)`` as the file contract says.

    Args:
        detector: an mmdet single-stage detector (``extract_feat`` + ``bbox_head``), eval mode.
        settings (dict): :func:`detector_settings`.
        normalize_in_graph (bool): flip BGR -> RGB (if ``bgr_to_rgb``) and ``(x - mean) / std``
            in the graph; otherwise the input is already normalised.
    """

    def __init__(self, detector, settings, normalize_in_graph=True):
        super().__init__()
        check_single_stage(detector)
        self.detector = detector
        self.candidates = head_candidates(detector.bbox_head, settings['test_cfg'])
        self.normalize = bool(normalize_in_graph) and settings['mean'] is not None
        self.flip = bool(normalize_in_graph) and settings['bgr_to_rgb']
        mean = settings['mean'] or [0.0] * 3
        std = settings['std'] or [1.0] * 3
        # (x - mean) / std as one multiply-add (OpenVINO fuses it into the first conv), the
        # channel flip as a Gather (a Slice with step -1 ran as a 3 ms reference kernel)
        mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer('scale', 1.0 / std, persistent=False)
        self.register_buffer('shift', -mean / std, persistent=False)
        self.register_buffer('bgr_order', torch.tensor([2, 1, 0]), persistent=False)
        self.iou_threshold = settings['iou_threshold']
        self.max_per_img = settings['max_per_img']
        self.class_agnostic = settings['class_agnostic']

    def forward(self, x):
        if self.flip:
            x = x.index_select(1, self.bgr_order)
        if self.normalize:
            x = x * self.scale + self.shift
        feats = self.detector.extract_feat(x)
        outs = self.detector.bbox_head(feats)
        height, width = x.shape[-2:]
        boxes, scores, labels = self.candidates(outs, height, width)
        return batched_nms_fixed(boxes, scores, labels, self.iou_threshold, self.max_per_img,
                                 self.class_agnostic)


# ------------------------------------------------------------------------------ checks
def verification_image(height, width, seed=0):
    """A fixed BGR uint8 ``H x W x 3`` image: smooth colour fields and a few solid rectangles
    (edges and blobs a detector's random or trained filters respond to)."""
    rng = np.random.RandomState(seed)
    import cv2
    base = rng.randint(0, 256, size=(6, 8, 3)).astype(np.uint8)
    img = cv2.resize(base, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    for _ in range(6):
        x1, y1 = rng.randint(0, max(1, width * 3 // 4)), rng.randint(0, max(1, height * 3 // 4))
        x2 = min(width, x1 + rng.randint(max(2, width // 10), max(3, width // 3)))
        y2 = min(height, y1 + rng.randint(max(2, height // 10), max(3, height // 3)))
        img[y1:y2, x1:x2] = rng.randint(0, 256, size=3)
    return np.ascontiguousarray(img)


def compare_detections(ref_dets, ref_labels, dets, labels, rtol=1e-3, top=20):
    """Compare two ``(N, K, 5)``/``(N, K)`` outputs (reference first).

    Rows are compared in order; where they differ (a near tie may swap two rows, a score at a
    threshold may add or drop one) each of the reference's ``top`` best detections of an image
    must have a counterpart (same label, box within ``rtol`` of the image's coordinate scale),
    or, if its score is tied with another of the reference's, a detection of its label and score
    (which of a tied, overlapping group NMS keeps, and so how many, depends on candidate order:
    random weights saturate scores at 1.0).

    Returns:
        dict: ``ok``, ``max_box_diff`` (pixels, over matched rows), ``max_rel_diff`` (box diff
        over the coordinate scale), ``max_score_diff``, ``rows_equal`` (whole outputs agree row
        by row), ``detections`` (kept rows of the reference per image) and ``problem``.
    """
    ref_dets, dets = np.asarray(ref_dets, np.float64), np.asarray(dets, np.float64)
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    out = dict(ok=True, max_box_diff=0.0, max_rel_diff=0.0, max_score_diff=0.0,
               rows_equal=True, detections=[], problem=None)
    if ref_dets.shape != dets.shape or ref_labels.shape != labels.shape:
        out.update(ok=False, rows_equal=False,
                   problem=f'shapes {list(dets.shape)}/{list(labels.shape)} where the '
                           f'reference has {list(ref_dets.shape)}/{list(ref_labels.shape)}')
        return out
    for i in range(ref_dets.shape[0]):
        ref_n = int((ref_labels[i] >= 0).sum())
        out['detections'].append(ref_n)
        scale = max(1.0, float(np.abs(ref_dets[i, :ref_n, :4]).max()) if ref_n else 1.0)
        box_diff = np.abs(ref_dets[i, :, :4] - dets[i, :, :4]).max(axis=1)
        score_diff = np.abs(ref_dets[i, :, 4] - dets[i, :, 4])
        same = (ref_labels[i] == labels[i]) & (box_diff <= rtol * scale) & (score_diff <= rtol)
        if same.all():
            pairs = [(j, j) for j in range(ref_n)]
        else:
            out['rows_equal'] = False
            pairs = []
            for j in range(min(ref_n, top)):
                d = np.abs(dets[i, :, :4] - ref_dets[i, j, :4]).max(axis=1)
                hit = np.nonzero((labels[i] == ref_labels[i, j]) & (d <= rtol * scale)
                                 & (np.abs(dets[i, :, 4] - ref_dets[i, j, 4]) <= rtol))[0]
                if not len(hit):
                    # equal scores (e.g. sigmoid saturated at 1.0): NMS visits tied boxes in
                    # candidate order, which top-k leaves to the runtime, so which of a tied,
                    # overlapping group survives (and how many) may differ; a detection of the
                    # same label and score stands in (its box is not compared)
                    tied = np.abs(ref_dets[i, :ref_n, 4] - ref_dets[i, j, 4]) <= rtol
                    stand_in = (labels[i] == ref_labels[i, j]) & \
                        (np.abs(dets[i, :, 4] - ref_dets[i, j, 4]) <= rtol)
                    if tied.sum() > 1 and stand_in.any():
                        out['rows_equal'] = False
                        continue
                    out.update(ok=False, problem=f'image {i}: detection {j} (label '
                               f'{int(ref_labels[i, j])}, score {ref_dets[i, j, 4]:.4f}, box '
                               f'{np.round(ref_dets[i, j, :4], 2).tolist()}) has no '
                               'counterpart')
                    break
                pairs.append((j, int(hit[0])))
        for j, k in pairs:
            d = float(np.abs(ref_dets[i, j, :4] - dets[i, k, :4]).max())
            out['max_box_diff'] = max(out['max_box_diff'], d)
            out['max_rel_diff'] = max(out['max_rel_diff'], d / scale)
            out['max_score_diff'] = max(out['max_score_diff'],
                                        float(abs(ref_dets[i, j, 4] - dets[i, k, 4])))
    return out


def check_batches(meta, sizes, dynamic):
    """The fixed input batches the export is verified on: ``(name, N x 3 x H x W)``."""
    from mmext.deploy.detector_runtime import preprocess
    h, w = meta['input_size']
    batches = []
    x, _ = preprocess(verification_image(h, w), meta)
    batches.append((f'1x{x.shape[2]}x{x.shape[3]}', x))
    if dynamic:
        for (hh, ww) in sizes:
            other = dict(meta, input_size=[hh, ww])  # resized to (hh, ww) itself
            a, _ = preprocess(verification_image(hh, ww, seed=1), other)
            b, _ = preprocess(verification_image(hh, ww, seed=2)[:, ::-1].copy(), other)
            batches.append((f'2x{a.shape[2]}x{a.shape[3]}', np.concatenate([a, b])))
    return batches


def _other_size(h, w):
    """A second image size to check the dynamic height and width at: both differ from the
    traced ones (a width kept would hide priors frozen at the traced width, as row-major grids
    of the same width index alike)."""
    return [(max(32, h * 3 // 4), w + max(32, w // 4))]


@torch.no_grad()
def verify_detector(wrapper, path, batches, rtol=1e-3, threads=1):
    """Run ``path`` in ONNX Runtime and ``wrapper`` in PyTorch on each batch and compare."""
    session = ort_session(path, threads=threads)
    results = {}
    for name, x in batches:
        ref = wrapper(torch.from_numpy(x))
        try:
            dets, labels = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        except Exception as exc:  # onnxruntime's own exception types
            results[name] = dict(ok=False, problem=f'onnxruntime failed: {error_line(exc, 400)}')
            continue
        results[name] = compare_detections(ref[0].numpy(), ref[1].numpy(), dets, labels, rtol)
    return results


# ------------------------------------------------------------------------------ export
def embed_metadata(path, meta):
    """Store ``meta`` as JSON under the ``mmext`` key of the ONNX file's ``metadata_props``."""
    import onnx
    model = onnx.load(path)
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta, sort_keys=True)
    onnx.save(model, path)


def build_metadata(settings, classes, normalize_in_graph, config_name, detector_name,
                   backbone_name):
    import mmext
    meta = {k: v for k, v in settings.items() if k != 'test_cfg'}
    if meta['mean'] is None:
        meta['mean'], meta['std'] = [0.0] * 3, [1.0] * 3
    meta.update(classes=[str(c) for c in classes], normalize_in_graph=bool(normalize_in_graph),
                config=config_name, mmext_version=mmext.__version__,
                torch_version=torch.__version__, detector=detector_name,
                backbone=backbone_name, input_name=INPUT_NAME, output_names=list(OUTPUT_NAMES))
    return meta


def export_detector_model(detector, cfg, out, classes, input_size=None,
                          normalize_in_graph=True, dynamic=True, opset=17, force=False,
                          config_name=None, inputs=(), rtol=1e-3, threads=1, nms_pre=None):
    """Export ``detector`` (built from ``cfg``, weights loaded) to ``out`` and verify it.

    The detector is copied and fused (``switch_to_deploy``); the graph is traced at
    ``input_size`` (padded to the divisor) to a temporary file in ``out``'s folder, the metadata
    embedded, ONNX Runtime's detections compared with the PyTorch wrapper's on fixed images
    (batch 1 at the traced size; with ``dynamic`` also batch 2 at another height), and only then
    renamed to ``out`` (permissions of a new file). A failure leaves no file. ``nms_pre``: see
    :func:`deploy_nms_pre`.

    Returns:
        dict: ``path``, ``meta``, ``input_shape``, ``exporter``, ``opset``, ``dynamic``,
        ``export_s``, ``verify_s``, ``checks`` (per batch: :func:`compare_detections`),
        ``max_box_diff``, ``max_rel_diff``, ``max_score_diff``, ``tracer_warnings``.
    """
    if not str(out).lower().endswith('.onnx'):
        raise ConfigError(f'the output {str(out)!r} does not end in .onnx; give an output file '
                          'named <name>.onnx.')
    if opset < 11:
        raise ConfigError(f'opset {opset} is too old (NonMaxSuppression with these inputs needs '
                          '11); use 17.')
    path = check_output_file(out, force=force, inputs=inputs, what='output')
    check_single_stage(detector)
    exporter = choose_exporter('torchscript')
    settings = detector_settings(cfg, detector, input_size, nms_pre=nms_pre)
    if len(classes) != int(detector.bbox_head.num_classes):
        raise ConfigError(f'{len(classes)} class names for a head of '
                          f'{detector.bbox_head.num_classes} classes.')
    detector_name, backbone_name = model_names(cfg, detector)
    meta = build_metadata(settings, classes, normalize_in_graph, config_name, detector_name,
                          backbone_name)
    model = fuse_for_deploy(copy.deepcopy(detector).cpu().float().eval())
    wrapper = DetectorWrapper(model, settings, normalize_in_graph).eval()
    h, w = settings['input_size']
    batches = check_batches(meta, _other_size(h, w), dynamic)
    example = torch.from_numpy(batches[0][1])
    axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}, 'dets': {0: 'batch'},
            'labels': {0: 'batch'}} if dynamic else None
    tmp = _temp_path(path)
    try:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as records, torch.no_grad():
            warnings.simplefilter('always')
            try:
                kwargs = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              opset_version=int(opset))
                if axes:
                    kwargs['dynamic_axes'] = axes
                onnx_export(wrapper, (example, ), tmp, exporter=exporter, **kwargs)
            except MmextError:
                raise
            except Exception as exc:  # the exporter's own errors
                raise MmextError(f'exporting {detector_name} ({backbone_name}) to ONNX failed '
                                 f'({error_line(exc)}); nothing was written to {out}.') from exc
        export_s = time.perf_counter() - start
        embed_metadata(tmp, meta)
        start = time.perf_counter()
        checks = verify_detector(wrapper, tmp, batches, rtol=rtol, threads=threads)
        verify_s = time.perf_counter() - start
        bad = [f'{name}: {c["problem"]}' for name, c in checks.items() if not c['ok']]
        if bad:
            lines = _tracer_warning_lines(records)
            hint = (' Shapes the tracer froze: ' + '; '.join(lines)) if lines else ''
            raise MmextError(f'the exported {detector_name} does not match PyTorch ('
                             + '; '.join(bad) + f'); nothing was written to {out}.' + hint)
        os.chmod(tmp, normal_mode())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    ok = [c for c in checks.values() if c['ok']]
    return dict(path=str(out), meta=meta, input_shape=list(example.shape), exporter=exporter,
                opset=int(opset), dynamic=bool(dynamic), export_s=round(export_s, 3),
                verify_s=round(verify_s, 3), checks=checks,
                max_box_diff=max(c['max_box_diff'] for c in ok),
                max_rel_diff=max(c['max_rel_diff'] for c in ok),
                max_score_diff=max(c['max_score_diff'] for c in ok),
                tracer_warnings=_tracer_warning_lines(records))
