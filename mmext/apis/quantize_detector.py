"""``quantize_detector``: an exported detector (:func:`~mmext.apis.export_detector`) to int8,
for ONNX Runtime (``OUT.onnx``: static QDQ, :func:`mmext.deploy.detector_quantize.quantize_ort`)
or OpenVINO (``OUT.xml`` + ``.bin``: NNCF,
:func:`mmext.deploy.detector_openvino.quantize_openvino`), calibrated on the user's images
preprocessed as the runtime does, or, without them, on generated demo images (fine for latency;
real images hold accuracy). The heads' output convolutions, decoding and NMS stay float in both.
Nothing is written until the file is complete (temporary name, then renamed); an existing output
is refused unless ``force``.
"""
import os.path as osp

from mmext.deploy.quantize import DEFAULT_CALIB_IMAGES
from mmext.errors import ConfigError

BACKEND_OF_SUFFIX = {'.onnx': 'onnxruntime', '.xml': 'openvino'}


def _backend(out):
    backend = BACKEND_OF_SUFFIX.get(osp.splitext(str(out))[1].lower())
    if backend is None:
        raise ConfigError(f'the int8 file {str(out)!r} must end in .onnx (ONNX Runtime, QDQ) or '
                          '.xml (OpenVINO IR, NNCF; its weights go to the .bin beside it).')
    return backend


def _calibration(meta, images, num):
    """``(batches, source)``: the first ``num`` images of ``images`` (files, folders, globs)
    preprocessed for the file, or ``num`` generated demo images."""
    from mmext.deploy.detector_runtime import calibration_batches, preprocess
    if images is None:
        return calibration_batches(meta, num), f'{num} generated demo images'
    from mmext.apis.predict_io import collect_sources, read_image
    sources = collect_sources(images)
    files = [s.path for s in sources if s.kind == 'image']
    if not files:
        raise ConfigError('calibration takes images; the inputs given are videos only '
                          '(extract frames first, or give a folder or glob of images).')
    files = files[:num]
    return [preprocess(read_image(f), meta)[0] for f in files], f'{len(files)} images'


def quantize_detector(onnx_path, out, images=None, num=DEFAULT_CALIB_IMAGES, model_type='auto',
                      force=False):
    """Quantize the exported detector ``onnx_path`` (fp32 ``.onnx``) into ``out``.

    Args:
        onnx_path (str): the file :func:`~mmext.apis.export_detector` wrote.
        out (str): ``.onnx`` for ONNX Runtime int8, ``.xml`` for OpenVINO int8 (NNCF).
        images (str | list | None): calibration images: files, folders or glob patterns (as
            :func:`~mmext.apis.predict` takes them; the first ``num`` in name order); ``None``
            generates demo images (latency checks only: the accuracy needs real ones).
        num (int): calibration images used.
        model_type (str): OpenVINO only: NNCF's ``'auto'`` (transformer mode where the graph
            has attention), ``'cnn'`` or ``'transformer'``.
        force (bool): replace an existing ``out``.

    Returns:
        dict: the quantizer's settings (``note``: what stayed float) plus ``path``, ``files``,
        ``backend``, ``calibration`` and ``size_mb``.
    """
    from mmext.checkpoints.files import check_output_file
    from mmext.deploy.detector_runtime import is_quantized, read_metadata
    backend = _backend(out)
    if not str(onnx_path).lower().endswith('.onnx'):
        raise ConfigError(f'{str(onnx_path)!r} is not an exported .onnx detector; write one with '
                          'tools/export_detector.py first.')
    meta = read_metadata(onnx_path)
    if is_quantized(str(onnx_path)):
        raise ConfigError(f'{str(onnx_path)!r} is already int8; quantize the fp32 export.')
    if backend == 'onnxruntime' and model_type != 'auto':
        raise ConfigError('model_type (NNCF\'s mode) applies to OpenVINO int8 (.xml) only.')
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f'num (calibration images) must be an integer >= 1, not {num!r}.')
    out = check_output_file(out, force, inputs=[onnx_path], what='int8 file')
    files = [out]
    if backend == 'openvino':
        from mmext.deploy.detector_openvino import check_model_type, ir_files
        check_model_type(model_type)
        files = ir_files(out)
        check_output_file(files[1], force, inputs=[onnx_path], what='int8 weights file')
    batches, source = _calibration(meta, images, num)
    if backend == 'openvino':
        from mmext.deploy.detector_openvino import quantize_openvino
        info = quantize_openvino(onnx_path, out, batches, model_type=model_type)
    else:
        from mmext.deploy.detector_quantize import quantize_ort
        info = quantize_ort(onnx_path, out, batches)
    return dict(info, path=out, files=files, backend=backend, calibration=source,
                size_mb=sum(osp.getsize(f) for f in files) / 2**20)
