"""``export_detector``: a config + checkpoint to the exported-detector ONNX file
(``tools/export_detector.py``). Loading the config and the weights happens here (mmext.apis may
import mmext.engine); the graph, its checks and its metadata are
:mod:`mmext.deploy.detector_export`.
"""
import os.path as osp

from mmext.errors import CheckpointError, ConfigError


def _resolve_config(config):
    """A ``mmdet::path`` config (mmdet's own) as a file path; everything else as given."""
    text = str(config)
    if '::' in text and not text.startswith('mmext::') and not osp.isfile(text):
        package, rel = text.split('::', 1)
        try:
            from mmengine.utils import get_installed_path
            root = get_installed_path(package)
        except Exception:  # not installed: importlib's own errors
            raise ConfigError(f'config {text!r}: package {package!r} is not installed.') from None
        path = osp.join(root, '.mim', 'configs', rel)
        if not osp.isfile(path):
            raise ConfigError(f'config {text!r} does not exist ({path} not found).')
        return path
    return config


def _classes(cfg, detector, checkpoint_obj):
    """Class names: the checkpoint's ``meta.dataset_meta``, the config's test dataset metainfo,
    its dataset class's ``METAINFO``, else ``class0..`` -- the first that fits the head."""
    num = int(detector.bbox_head.num_classes)
    found = []
    meta = (checkpoint_obj or {}).get('meta') if isinstance(checkpoint_obj, dict) else None
    if isinstance(meta, dict):
        found.append((meta.get('dataset_meta') or {}).get('classes'))
    dataset = dict((cfg.get('test_dataloader') or {}).get('dataset') or {})
    found.append((dataset.get('metainfo') or {}).get('classes'))
    if dataset.get('type'):
        try:
            from mmdet.registry import DATASETS
            cls = DATASETS.get(str(dataset['type']).split('.')[-1])
            found.append(getattr(cls, 'METAINFO', {}).get('classes'))
        except Exception:  # noqa: BLE001  (names are a convenience)
            pass
    for names in found:
        if names is not None and len(names) == num:
            return [str(n) for n in names]
    return [f'class{i}' for i in range(num)]


def export_detector(config, checkpoint, out, input_size=None, normalize_in_graph=True,
                    dynamic=True, opset=17, force=False, cfg_options=None, nms_pre=None):
    """Export the single-stage detector of ``config`` with ``checkpoint`` to ``out`` (ONNX).

    Args:
        config (str | Config): an mmdet config (a path, ``mmext::...`` or ``mmdet::...``) with an
            RTMDet, YOLOX or RetinaNet head and any backbone.
        checkpoint (str | None): weights training wrote (``state_dict`` inside, read weights
            only); ``None`` leaves the random initialisation (for benchmarks and tests).
        out (str): the ``.onnx`` file; refused if it exists unless ``force``.
        input_size (tuple): ``(H, W)`` the images are resized to (keep ratio); default the test
            pipeline's ``Resize`` scale.
        normalize_in_graph (bool): the graph flips BGR to RGB and normalises (input: 0-255 BGR).
        dynamic (bool): batch, height and width of the input are dynamic.
        opset (int): ONNX opset.
        cfg_options (dict): overrides merged into the config (``--cfg-options``).
        nms_pre (int): (prior, class) pairs per level kept before NMS; default the config's
            ``test_cfg.nms_pre`` capped at 1000 (``DEPLOY_NMS_PRE``: a top-30000 of RTMDet's
            stride-8 level costs more than the rest of the post-processing), ``-1`` the
            config's value unchanged (mmdet's own predictions, exactly).

    Returns:
        dict: see :func:`mmext.deploy.detector_export.export_detector_model`, plus ``config``,
        ``checkpoint`` and ``build_s``.
    """
    import time

    from mmext.checkpoints.files import check_output_file
    from mmext.deploy.detector_export import check_single_stage, export_detector_model
    from mmext.engine.checkpoint_check import check_state_dict_fits, read_training_checkpoint
    from mmext.engine.config import build_config_model

    if input_size is not None:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        input_size = tuple(int(v) for v in input_size)
    if not str(out).lower().endswith('.onnx'):
        raise ConfigError(f'the output {str(out)!r} does not end in .onnx; give an output file '
                          'named <name>.onnx.')
    start = time.perf_counter()
    resolved = _resolve_config(config)
    # refused before minutes of work: an existing output without force, an input as output
    check_output_file(out, force=force, what='output',
                      inputs=tuple(p for p in (checkpoint, resolved) if isinstance(p, str)))
    detector, codebase, cfg = build_config_model(resolved, cfg_options)
    if codebase != 'mmdet':
        raise ConfigError(f'{config} is an {codebase} config; the detector export takes mmdet '
                          'single-stage detectors (RTMDet, YOLOX, RetinaNet).')
    check_single_stage(detector)
    obj = None
    if checkpoint is not None:
        if not osp.isfile(str(checkpoint)):
            raise CheckpointError(f'checkpoint {str(checkpoint)!r} does not exist.')
        state, obj = read_training_checkpoint(str(checkpoint))
        check_state_dict_fits(detector.state_dict(), state, repr(str(checkpoint)))
        detector.load_state_dict(state, strict=False)
    detector.eval()
    build_s = time.perf_counter() - start
    name = osp.basename(str(config)) if not hasattr(config, 'filename') else \
        osp.basename(str(config.filename or 'config'))
    info = export_detector_model(
        detector, cfg, out, _classes(cfg, detector, obj), input_size=input_size,
        normalize_in_graph=normalize_in_graph, dynamic=dynamic, opset=opset, force=force,
        config_name=name, inputs=tuple(p for p in (checkpoint, resolved) if isinstance(p, str)),
        nms_pre=nms_pre)
    info.update(config=str(config), checkpoint=None if checkpoint is None else str(checkpoint),
                build_s=round(build_s, 3))
    return info
