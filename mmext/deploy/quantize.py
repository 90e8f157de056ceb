"""Static int8 quantization of an exported backbone with ONNX Runtime's quantization tools.

:func:`quantize_onnx` runs ``onnxruntime.quantization.quantize_static`` on an fp32 ONNX graph:
QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels),
per-channel int8 weights, uint8 activations whose ranges are calibrated on real images.

Calibration images (:func:`calibration_images`): the ``.jpg``/``.png`` files of a folder the user
gives, or by default images of mmext's generated demo set (:func:`mmext.demo.make_coco_demo`,
written to a temporary folder). Each image is resized to the model's input, converted to RGB and
normalised with the ImageNet mean and std (as every mmext config's data preprocessor does), and
the images are fed in batches of the exported graph's batch size.
"""
import glob
import logging
import os.path as osp
import tempfile

import numpy as np

from mmext.errors import ConfigError, MmextError
from mmext.utils import quiet

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
DEFAULT_CALIB_IMAGES = 16
QUANT_OPS = ['Conv', 'MatMul', 'Gemm']


def _quiet_root_logger():
    """onnxruntime.quantization logs per-tensor notes through the root logger: errors only."""
    return quiet(logging.getLogger())


def image_files(folder, num=None):
    """The image files of ``folder`` (sorted, at most ``num``); an error when there are none."""
    if not osp.isdir(str(folder)):
        raise ConfigError(f'calibration folder {folder!r} does not exist; give a folder of '
                          '.jpg/.png images (or none, to calibrate on generated demo images).')
    files = sorted(f for f in glob.glob(osp.join(str(folder), '**', '*'), recursive=True)
                   if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise ConfigError(f'calibration folder {folder!r} has no .jpg/.png images; int8 '
                          'quantization needs real images to calibrate its activation ranges.')
    return files[:num] if num else files


def load_image(path, size):
    """``path`` as a normalised float32 ``3 x H x W`` array at ``size = (H, W)``."""
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f'cannot read calibration image {path!r}')
    h, w = size
    rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR),
                       cv2.COLOR_BGR2RGB).astype(np.float32)
    return ((rgb - MEAN) / STD).transpose(2, 0, 1).copy()


def calibration_images(size, num=DEFAULT_CALIB_IMAGES, folder=None, seed=0):
    """``num`` normalised images at ``size`` as a ``num x 3 x H x W`` float32 array: from
    ``folder``, or generated demo images (mmext.demo) when ``folder`` is ``None``."""
    num = int(num)
    if num < 1:
        raise ConfigError(f'int8 calibration needs at least one image (got {num}).')
    if folder is not None:
        files = image_files(folder, num)
        return np.stack([load_image(f, size) for f in files])
    from mmext.demo import make_coco_demo
    with tempfile.TemporaryDirectory(prefix='mmext_calib_') as root:
        info = make_coco_demo(root, num_train=num, num_val=1, img_size=max(size), seed=seed)
        files = image_files(osp.join(info['data_root'], info['train_img_prefix']), num)
        return np.stack([load_image(f, size) for f in files])


class ArrayReader:
    """An ONNX Runtime ``CalibrationDataReader`` over ``images`` in batches of ``batch``
    (the last batch is filled up by cycling through the images from the start)."""

    def __init__(self, images, input_name, batch):
        self.images, self.input_name, self.batch = images, input_name, int(batch)
        n = len(images)
        self.batches = [np.stack([images[(s + i) % n] for i in range(self.batch)])
                        for s in range(0, n, self.batch)]
        self.rewind()

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter([{self.input_name: b} for b in self.batches])


def quantize_onnx(fp32_path, int8_path, images, method='minmax', per_channel=True,
                  keep_float=()):
    """Write the static-int8 QDQ version of ``fp32_path`` to ``int8_path``, calibrated on
    ``images`` (``N x 3 x H x W``, normalised); returns a dict of the settings used.

    ``method``: ``'minmax'``, ``'percentile'`` or ``'entropy'`` (ONNX Runtime's calibrators).
    ``keep_float``: submodule name fragments (a backbone's ``int8_float_layers``) whose nodes
    stay in float: every node whose exported name has ``/<fragment>/`` in it.
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MmextError('int8 quantization needs onnxruntime and onnx: '
                         '`pip install onnxruntime onnx`.') from None
    methods = dict(minmax=CalibrationMethod.MinMax, percentile=CalibrationMethod.Percentile,
                   entropy=CalibrationMethod.Entropy)
    if method not in methods:
        raise ConfigError(f'unknown calibration method {method!r}; choose from '
                          f'{", ".join(methods)}')
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ConfigError('int8 calibration needs a non-empty N x 3 x H x W array of images.')
    graph = onnx.load(fp32_path, load_external_data=False).graph
    input_name = graph.input[0].name
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    prepared = osp.splitext(int8_path)[0] + '.prep.onnx'
    try:
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001  (pre-processing is an optimisation only)
        prepared = fp32_path
    # Only the products are quantized (where int8 kernels gain); norms, softmax and the
    # element-wise ops stay in fp32 between them.
    kept = [node.name for node in onnx.load(prepared, load_external_data=False).graph.node
            if node.op_type in QUANT_OPS and any(f'/{k}/' in node.name for k in keep_float)]
    with _quiet_root_logger():
        quantize_static(prepared, int8_path, ArrayReader(images, input_name, batch),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method], op_types_to_quantize=QUANT_OPS,
                        nodes_to_exclude=kept)
    return dict(calib_images=len(images), calib_method=method, quant_format='QDQ',
                per_channel=per_channel, float_nodes=len(kept))


def cosine_per_map(ref, out):
    """Cosine similarity of each paired output map (flattened), in float64."""
    import torch
    from mmext.utils import output_list
    sims = []
    for a, b in zip(output_list(ref), output_list(out)):
        a = torch.as_tensor(a).double().flatten()
        b = torch.as_tensor(b).double().flatten()
        sims.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    return sims
