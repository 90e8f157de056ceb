"""Running an exported mmext detector (``tools/export_detector.py``) without PyTorch models:
its metadata, mmdet's test-time resize and pad, the padded outputs back to image pixels, and a
session on ONNX Runtime or OpenVINO.

* :func:`read_metadata` -- the file's ``mmext`` metadata (a :class:`ConfigError` in one line for
  any other file);
* :func:`preprocess` -- a BGR uint8 image to the ``1 x 3 x H x W`` float32 input (mmcv's
  ``imrescale`` keep-ratio resize to ``input_size``, bilinear, as mmdet's ``Resize``; bottom/right
  padding to ``pad_size_divisor`` with ``pad_value``; normalised here only when the graph does not);
* :func:`postprocess` -- one image's ``dets``/``labels`` rows to boxes in the original image;
* :class:`DetectorSession` -- ``run`` a batch, ``predict`` a list of images.

Only numpy and OpenCV are needed besides the backend (mmcv is used when present, for the very
function mmdet's pipeline calls).
"""
import functools
import json
import os.path as osp

import numpy as np

from mmext.errors import ConfigError, MmextError

METADATA_KEY = 'mmext'
BACKENDS = ('onnxruntime', 'openvino')
PRECISIONS = ('fp32', 'bf16', 'int8')
_HOW = 'export it with tools/export_detector.py'


# ------------------------------------------------------------------------------ metadata
def _metadata_props(path):
    if path.lower().endswith('.xml'):  # OpenVINO IR (the int8 files NNCF writes)
        from mmext.deploy.detector_openvino import read_ir_metadata
        text = read_ir_metadata(path)
        return {} if text is None else {METADATA_KEY: text}
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as exc:  # onnx's DecodeError and friends
            raise ConfigError(f'not an mmext detector export: {path!r} is not an ONNX file '
                              f'({type(exc).__name__}); {_HOW}.') from None
        return {p.key: p.value for p in model.metadata_props}
    session = _ort_session(path, 1)
    return dict(session.get_modelmeta().custom_metadata_map)


def read_metadata(path):
    """The ``mmext`` metadata (dict) of an exported detector file."""
    path = str(path)
    if not osp.isfile(path):
        raise ConfigError(f'exported detector {path!r} does not exist; {_HOW}.')
    props = _metadata_props(path)
    text = props.get(METADATA_KEY)
    if text is None:
        raise ConfigError(f'not an mmext detector export: {path!r} has no {METADATA_KEY!r} '
                          f'metadata; {_HOW}.')
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or 'input_size' not in meta or 'classes' not in meta:
        raise ConfigError(f'not an mmext detector export: the {METADATA_KEY!r} metadata of '
                          f'{path!r} is not the detector contract\'s; {_HOW}.')
    return meta


# ------------------------------------------------------------------------------ images
def _rescale(img, size_wh):
    """mmcv's ``imrescale(img, (w, h), bilinear)``: largest keep-ratio size within the scale."""
    try:
        from mmcv import imrescale
        return imrescale(img, tuple(size_wh), interpolation='bilinear', backend='cv2')
    except ImportError:
        import cv2
        h, w = img.shape[:2]
        long_edge, short_edge = max(size_wh), min(size_wh)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
        new = (int(w * float(factor) + 0.5), int(h * float(factor) + 0.5))
        return cv2.resize(img, new, interpolation=cv2.INTER_LINEAR)


def _resize(img, size_wh):
    try:
        from mmcv import imresize
        return imresize(img, tuple(size_wh), interpolation='bilinear', backend='cv2')
    except ImportError:
        import cv2
        return cv2.resize(img, tuple(size_wh), interpolation=cv2.INTER_LINEAR)


def preprocess(image, meta):
    """``(tensor 1 x 3 x Hp x Wp float32, info)`` for one BGR uint8 ``H x W x 3`` image.

    ``info``: ``scale_factor`` (w_scale, h_scale), ``ori_shape`` (h, w), ``img_shape`` (h, w
    after resize), ``pad_shape`` (h, w after padding).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ConfigError(f'an image for the detector is H x W x 3 (BGR), not of shape '
                          f'{list(img.shape)}')
    h, w = img.shape[:2]
    in_h, in_w = (int(v) for v in meta['input_size'])
    if meta.get('keep_ratio', True):
        resized = _rescale(img, (in_w, in_h))
    else:
        resized = _resize(img, (in_w, in_h))
    new_h, new_w = resized.shape[:2]
    d = int(meta.get('pad_size_divisor', 1) or 1)
    pad_h, pad_w = -(-new_h // d) * d, -(-new_w // d) * d
    pad_value = np.asarray(meta.get('pad_value', 0), dtype=np.float32).reshape(-1)
    out = np.empty((pad_h, pad_w, 3), dtype=np.float32)
    out[...] = pad_value if pad_value.size in (1, 3) else pad_value[0]
    out[:new_h, :new_w] = resized
    if not meta.get('normalize_in_graph', True):
        if meta.get('bgr_to_rgb'):
            out = out[..., ::-1]
        mean = np.asarray(meta['mean'], np.float32)
        std = np.asarray(meta['std'], np.float32)
        out = (out - mean) / std
    tensor = np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32)
    info = dict(scale_factor=(new_w / w, new_h / h), ori_shape=(h, w),
                img_shape=(new_h, new_w), pad_shape=(pad_h, pad_w))
    return tensor, info


def postprocess(dets, labels, info, score_thr=None):
    """One image's ``dets (K, 5)``, ``labels (K,)`` (a leading batch of 1 is allowed) to
    ``dict(bboxes (M, 4) float32, scores (M,), labels (M,))`` in the original image's pixels
    (clipped to it), without the padding rows (label -1, or score ``<= score_thr``)."""
    dets = np.asarray(dets, dtype=np.float32)
    labels = np.asarray(labels)
    if dets.ndim == 3 and dets.shape[0] == 1:
        dets, labels = dets[0], labels[0]
    if dets.ndim != 2 or dets.shape[-1] != 5 or labels.shape != dets.shape[:1]:
        raise ConfigError(f'postprocess takes one image\'s dets (K, 5) and labels (K,), not '
                          f'{list(dets.shape)} and {list(labels.shape)}')
    keep = (labels >= 0) & (dets[:, 4] > (0.0 if score_thr is None else float(score_thr)))
    w_scale, h_scale = info['scale_factor']
    boxes = dets[keep, :4] / np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
    ori_h, ori_w = info['ori_shape']
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, ori_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, ori_h)
    return dict(bboxes=boxes.astype(np.float32), scores=dets[keep, 4].astype(np.float32),
                labels=labels[keep].astype(np.int64))


# ------------------------------------------------------------------------------ sessions
def _ort_session(path, threads):
    from mmext.deploy.export import ort_session
    try:
        return ort_session(str(path), threads=threads)
    except MmextError:  # onnxruntime is not installed
        raise MmextError('onnxruntime is not installed: `pip install mmext[deploy]` (or '
                         '`pip install onnxruntime`).') from None
    except Exception as exc:  # onnxruntime's own exception types
        raise ConfigError(f'ONNX Runtime cannot load {str(path)!r} ({type(exc).__name__}); '
                          f'{_HOW}.') from None


def calibration_batches(meta, num=8):
    """Preprocessed generated demo images (mmext.demo) at the export's input size."""
    import tempfile
    import cv2
    from mmext.deploy.quantize import image_files
    from mmext.demo import make_coco_demo
    with tempfile.TemporaryDirectory(prefix='mmext_calib_') as root:
        info = make_coco_demo(root, num_train=num, num_val=1, img_size=max(meta['input_size']),
                              seed=0)
        files = image_files(osp.join(info['data_root'], info['train_img_prefix']), num)
        return [preprocess(cv2.imread(f, cv2.IMREAD_COLOR), meta)[0] for f in files]


def is_quantized(path):
    """Whether the graph already holds int8 QuantizeLinear nodes (a quantized export), or an
    OpenVINO IR file FakeQuantize ops."""
    if path.lower().endswith('.xml'):
        from mmext.deploy.detector_openvino import quantized_ops
        return bool(quantized_ops(path))
    try:
        import onnx
    except ImportError:
        return False
    graph = onnx.load(path, load_external_data=False).graph
    return any(node.op_type in ('QuantizeLinear', 'DynamicQuantizeLinear') for node in graph.node)


@functools.lru_cache(maxsize=None)
def openvino_native_bf16():
    """Whether OpenVINO's CPU plugin computes bf16 natively here (``BF16`` among its
    optimization capabilities: AVX512-BF16 or AMX)."""
    import openvino as ov
    return 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


def openvino_config(precision, threads=1):
    """The CPU plugin settings a :class:`DetectorSession` compiles with: latency, one stream,
    ``threads``; the precision hint ``bf16`` for ``'bf16'``, ``f32`` for ``'fp32'``. int8 files:
    OpenVINO picks int8 kernels itself for their quantized parts; the rest (what the int8 file
    kept float: the heads' output convs, and the attention's softmax) runs bf16 where
    :func:`openvino_native_bf16`, else f32 -- decoding, top-k and NMS stay f32 under either hint
    (at 640 x 640, 1 thread, AMD EPYC Zen 4, interleaved: EdgeViT-XXS RTMDet-tiny 102.4 -> 91.3
    ms, EfficientFormerV2-S0's 93.4 -> 91.7, SHViT-S1's 39.3 -> 38.1)."""
    bf16 = precision == 'bf16' or (precision == 'int8' and openvino_native_bf16())
    return {'INFERENCE_PRECISION_HINT': 'bf16' if bf16 else 'f32',
            'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': '1',
            'INFERENCE_NUM_THREADS': str(int(threads or 1))}


def compile_openvino(model, precision, threads=1, input_shape=None, **extra):
    """``model`` (a path, or an ``openvino.Model``: copied before reshaping) compiled for the
    CPU with :func:`openvino_config` (+ ``extra`` settings), reshaped to the static
    ``input_shape`` of its first input first if given."""
    import openvino as ov
    core = ov.Core()
    if isinstance(model, ov.Model):
        model = model.clone() if input_shape is not None else model
    else:
        model = core.read_model(str(model))
    if input_shape is not None:
        model.reshape({model.inputs[0]: ov.PartialShape([int(v) for v in input_shape])})
    return core.compile_model(model, 'CPU', dict(openvino_config(precision, threads), **extra))


#: input shapes an OpenVINO session keeps compiled (one per image size and batch)
OPENVINO_SHAPES = 8


class DetectorSession:
    """An exported detector on ``backend`` (``'onnxruntime'`` or ``'openvino'``).

    ``precision``: ``'fp32'``; ``'bf16'`` on OpenVINO (the CPU plugin's
    ``INFERENCE_PRECISION_HINT``); ``'int8'``: a file that is already int8 (QDQ nodes) runs as it
    is on either backend; an fp32 file is quantized at creation on ONNX Runtime (static QDQ int8
    of the convolutions and matrix products, calibrated on generated demo images through
    :func:`preprocess`, in a temporary file), and refused on OpenVINO. ``threads``: intra-op
    threads. ``run_path``: the file the backend runs (the temporary int8 file when quantized
    here).
    """

    def __init__(self, path, backend='onnxruntime', precision='fp32', threads=1):
        if backend not in BACKENDS:
            raise ConfigError(f'unknown backend {backend!r}; choose from {", ".join(BACKENDS)}')
        if precision not in PRECISIONS:
            raise ConfigError(f'unknown precision {precision!r}; choose from '
                              f'{", ".join(PRECISIONS)}')
        if backend == 'onnxruntime' and precision == 'bf16':
            raise ConfigError('bf16 is not offered on ONNX Runtime (its CPU kernels run fp32); '
                              "use backend='openvino' for bf16.")
        if backend != 'openvino' and str(path).lower().endswith('.xml'):
            raise ConfigError(f'{str(path)!r} is an OpenVINO IR file: run it with '
                              "backend='openvino' (--backend openvino).")
        self.path, self.backend, self.precision = str(path), backend, precision
        self.threads = int(threads or 1)
        self.meta = read_metadata(self.path)
        self._tmp = None
        self.quantized = precision == 'int8' and is_quantized(self.path)
        if backend == 'openvino' and precision == 'int8' and not self.quantized:
            raise ConfigError(f'int8 on OpenVINO runs an int8 (QuantizeLinear/DequantizeLinear) '
                              f'file and {self.path!r} is fp32: quantize it first, or use '
                              "backend='onnxruntime' (quantizes at start-up).")
        if backend == 'onnxruntime':
            self._init_ort()
        else:
            self._init_openvino()

    def _init_ort(self):
        path = self.path
        if self.precision == 'int8' and not self.quantized:
            import tempfile
            from mmext.deploy.quantize import quantize_onnx
            _ort_session(path, 1)  # a broken file is reported as such, not as a quantizer error
            self._tmp = tempfile.TemporaryDirectory(prefix='mmext_int8_')
            int8 = osp.join(self._tmp.name, 'detector.int8.onnx')
            images = np.concatenate(calibration_batches(self.meta))
            quantize_onnx(path, int8, images)
            path = int8
        self.run_path = path
        session = _ort_session(path, self.threads)
        names = [o.name for o in session.get_outputs()]
        input_name = session.get_inputs()[0].name
        self._run = lambda x: session.run(names[:2], {input_name: x})

    def _init_openvino(self):
        """OpenVINO compiles the model once per input shape (kept, at most
        :data:`OPENVINO_SHAPES`): the CPU plugin's dynamic-shape inference gave EdgeViT's graph
        a batch of 0 in its outputs, a static shape runs it right (and lets the plugin plan
        memory for it). The first compile (at the metadata's input size) checks the file."""
        try:
            import openvino as ov
        except ImportError:
            raise MmextError('OpenVINO is not installed: `pip install mmext[openvino]` (or '
                             '`pip install openvino`).') from None
        model = ov.Core().read_model(self.path)
        cache = {}

        def request_for(shape):
            if shape not in cache:
                if len(cache) >= OPENVINO_SHAPES:
                    cache.pop(next(iter(cache)))
                try:
                    compiled = compile_openvino(model, self.precision, self.threads, shape)
                except Exception as exc:  # openvino's RuntimeError variants
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
                    raise MmextError(f'OpenVINO cannot compile {self.path!r} for the CPU with '
                                     f'{self.precision} at input {list(shape)} '
                                     f'({type(exc).__name__}: {first})') from None
                names = [o.get_any_name() for o in compiled.outputs]
                order = [names.index(n) if n in names else i
                         for i, n in enumerate(('dets', 'labels'))]
                cache[shape] = (compiled.create_infer_request(), order)
            return cache[shape]

        h, w = self.meta['input_size']
        divisor = int(self.meta.get('pad_size_divisor', 1) or 1)
        request_for((1, 3, -(-int(h) // divisor) * divisor, -(-int(w) // divisor) * divisor))
        self.run_path = self.path

        def run(x):
            request, order = request_for(tuple(int(v) for v in x.shape))
            request.infer({0: x})
            return [np.array(request.get_output_tensor(i).data) for i in order]

        self._run = run

    def run(self, batch):
        """``(dets (N, K, 5) float32, labels (N, K) int64)`` for an ``N x 3 x H x W`` batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f'the detector takes an N x 3 x H x W batch, not shape '
                              f'{list(x.shape)}')
        dets, labels = self._run(x)
        return np.asarray(dets, np.float32), np.asarray(labels).astype(np.int64)

    def predict(self, images, score_thr=None):
        """:func:`postprocess` dicts for a list of BGR uint8 images (one run per image: each
        has its own padded size)."""
        results = []
        for image in images:
            x, info = preprocess(image, self.meta)
            dets, labels = self.run(x)
            results.append(postprocess(dets[0], labels[0], info, score_thr))
        return results

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
