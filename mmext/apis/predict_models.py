"""The detectors :func:`mmext.apis.predict` runs (see :mod:`mmext.apis.predict` for what is
timed as what): :class:`TorchDetector` (an mmdet config + checkpoint) and
:class:`ExportedDetector` (an ``.onnx`` file of ``tools/export_detector.py``, through
:mod:`mmext.deploy.detector_runtime`). Both offer ``preprocess(img) -> (batch, shape)``,
``infer(batch) -> out``, ``postprocess(out, batch, score_thr) -> dict(labels, scores, bboxes[,
masks])`` as numpy arrays in original-image pixels, ``context()``, ``classes``, ``palette`` and
``close()``.
"""
import contextlib
import os
import os.path as osp
import warnings
from types import SimpleNamespace

import numpy as np

from mmext.errors import CheckpointError, ConfigError

EXPORT_EXTS = ('.onnx', '.xml')  # .xml: OpenVINO IR (int8 files written by NNCF)
BACKENDS = ('onnxruntime', 'openvino')


# --------------------------------------------------------------------------- torch detectors
class TorchDetector:
    """An mmdet detector from a config and a checkpoint (module docstring)."""

    def __init__(self, config, checkpoint, device=None, cfg_options=None, fuse=False,
                 bf16=False):
        import torch
        from mmext.engine.checkpoint_check import (TEST_MAY_LACK, check_state_dict_fits,
                                                   read_training_checkpoint)
        from mmext.engine.config import detect_codebase, load_config, register_codebase
        if checkpoint is None:
            raise ConfigError('a config needs its checkpoint (--checkpoint): the weights '
                              'training wrote (e.g. work_dirs/<config>/epoch_12.pth).')
        self.device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
        if bf16:  # refused before anything is built where bf16 is not native
            from mmext.engine.precision import check_bf16
            check_bf16(torch.device(self.device).type)
        cfg = load_config(config, cfg_options)
        if not cfg.get('model') or detect_codebase(cfg) != 'mmdet':
            raise ConfigError(f'{config} is not an mmdet detector config.')
        register_codebase('mmdet')
        state, ckpt = read_training_checkpoint(str(checkpoint))
        from mmdet.apis import init_detector
        # init_detector warns "no checkpoint, COCO classes" (set below) through its own
        # simplefilter('once'): recorded here, not shown
        with warnings.catch_warnings(record=True):
            model = init_detector(cfg, None, palette='random', device=self.device)
        try:
            check_state_dict_fits(model.state_dict(), state, repr(str(checkpoint)),
                                  TEST_MAY_LACK)
        except CheckpointError:
            from mmext.apis.evaluation import fused_mismatch
            hint = fused_mismatch(SimpleNamespace(model=model), str(checkpoint))
            if hint is None:
                raise
            raise CheckpointError(hint) from None
        model.load_state_dict(state, strict=False)
        model.dataset_meta = self._dataset_meta(cfg, ckpt)
        model.eval()
        if fuse:
            backbone = getattr(model, 'backbone', None)
            if not hasattr(backbone, 'switch_to_deploy'):
                raise ConfigError(f'--fuse: the backbone {type(backbone).__name__} has no '
                                  'switch_to_deploy() (nothing to fold); run without --fuse.')
            backbone.switch_to_deploy()
        self.model, self.cfg, self.bf16 = model, cfg, bf16
        self.classes = list(model.dataset_meta['classes'])
        self.palette = model.dataset_meta.get('palette')
        self.pipeline = self._pipeline(cfg)
        self.split = self._single_stage(model)
        self.cuda = torch.device(self.device).type == 'cuda'

    @staticmethod
    def _dataset_meta(cfg, ckpt):
        """Class names from the checkpoint (as init_detector), else the config's test dataset,
        else COCO's; the palette from the config, else the checkpoint."""
        meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        if isinstance(meta.get('dataset_meta'), dict):
            out = {str(k).lower(): v for k, v in meta['dataset_meta'].items()}
        elif meta.get('CLASSES'):
            out = {'classes': meta['CLASSES']}
        else:
            out = {}
        config_meta = {}
        try:
            import copy
            from mmdet.registry import DATASETS
            dataset = copy.deepcopy(cfg.test_dataloader.dataset)
            dataset['lazy_init'] = True
            config_meta = dict(DATASETS.build(dataset).metainfo)
        except Exception:  # noqa: BLE001  (no test set in the config: names from elsewhere)
            pass
        if not out.get('classes'):
            if config_meta.get('classes'):
                out['classes'] = config_meta['classes']
            else:
                from mmdet.evaluation import get_classes
                out['classes'] = get_classes('coco')
        if config_meta.get('palette') is not None:
            out['palette'] = config_meta['palette']
        return out

    @staticmethod
    def _pipeline(cfg):
        # what inference_detector runs for an image array
        # (a deep copy: inference_detector's shallow cfg.copy() changes the model's config)
        import copy
        from mmcv.transforms import Compose
        from mmdet.utils import get_test_pipeline_cfg
        pipeline = copy.deepcopy(get_test_pipeline_cfg(cfg))
        pipeline[0].type = 'mmdet.LoadImageFromNDArray'
        return Compose(pipeline)

    @staticmethod
    def _single_stage(model):
        """Whether ``model.predict`` is mmdet's single-stage one with a plain dense head, so
        the network and the post-processing can be timed apart."""
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        from mmdet.models.detectors import SingleStageDetector
        head = getattr(model, 'bbox_head', None)
        return (type(model).predict is SingleStageDetector.predict
                and isinstance(head, BaseDenseHead) and type(head).predict is BaseDenseHead.predict)

    def close(self):
        pass

    def context(self):
        if not self.bf16:
            return contextlib.nullcontext()
        from mmext.engine.precision import Bf16Parts
        return Bf16Parts(self.model)

    def sync(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def preprocess(self, img):
        data = self.pipeline(dict(img=img, img_id=0))
        batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
        import torch
        with torch.no_grad():
            batch = self.model.data_preprocessor(batch, False)
        self.sync()
        return batch, tuple(batch['inputs'].shape)

    def infer(self, batch):
        import torch
        model = self.model
        with torch.no_grad():
            if self.split:
                out = model.bbox_head(model.extract_feat(batch['inputs']))
            else:
                out = model.predict(batch['inputs'], batch['data_samples'])
        self.sync()
        return out

    def postprocess(self, out, batch, score_thr):
        import torch
        model, samples = self.model, batch['data_samples']
        if self.split:
            with torch.no_grad():
                results = model.bbox_head.predict_by_feat(
                    *out, batch_img_metas=[s.metainfo for s in samples], rescale=True)
                out = model.add_pred_to_datasample(samples, results)
        inst = out[0].pred_instances
        scores = inst.scores.detach().float().cpu().numpy()
        keep = scores > score_thr
        pred = dict(labels=inst.labels.detach().cpu().numpy()[keep].astype(np.int64),
                    scores=scores[keep],
                    bboxes=inst.bboxes.detach().float().cpu().numpy()[keep])
        if 'masks' in inst:
            pred['masks'] = inst.masks.detach().cpu().numpy()[keep]
        self.sync()
        return pred


# ------------------------------------------------------------------------ exported detectors
class ExportedDetector:
    """A detector exported by ``tools/export_detector.py``, run by ONNX Runtime or OpenVINO."""

    def __init__(self, path, backend='onnxruntime', precision='fp32', threads=None):
        if backend not in BACKENDS:
            raise ConfigError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}.')
        try:
            from mmext.deploy import detector_runtime as runtime
        except ImportError as exc:
            raise ConfigError(f'running exported detectors needs mmext.deploy.detector_runtime, '
                              f'which this mmext lacks ({exc}).') from None
        import torch
        self.runtime = runtime
        self.session = runtime.DetectorSession(
            path, backend=backend, precision=precision,
            threads=int(threads or torch.get_num_threads()))
        self.meta = self.session.meta
        self.classes = list(self.meta.get('classes') or [])
        self.palette = None

    def context(self):
        return contextlib.nullcontext()

    def close(self):
        close = getattr(self.session, 'close', None)
        if close is not None:
            close()

    def preprocess(self, img):
        tensor, info = self.runtime.preprocess(img, self.meta)
        tensor = np.ascontiguousarray(np.asarray(tensor, dtype=np.float32))
        return (tensor, info), tuple(tensor.shape)

    def infer(self, batch):
        return self.session.run(batch[0])

    def postprocess(self, out, batch, score_thr):
        dets, labels = out
        pred = self.runtime.postprocess(dets, labels, batch[1], score_thr=score_thr)
        return dict(labels=np.asarray(pred['labels'], dtype=np.int64),
                    scores=np.asarray(pred['scores'], dtype=np.float32),
                    bboxes=np.asarray(pred['bboxes'], dtype=np.float32).reshape(-1, 4))


def is_exported(model):
    return isinstance(model, (str, os.PathLike)) and \
        osp.splitext(os.fspath(model))[1].lower() in EXPORT_EXTS


def load_detector(model, checkpoint=None, device=None, cfg_options=None, fuse=False, bf16=False,
                  backend='onnxruntime', precision='fp32', threads=None):
    """A :class:`TorchDetector` for a config, an :class:`ExportedDetector` for an export."""
    if is_exported(model):
        if not osp.isfile(os.fspath(model)):
            raise ConfigError(f'exported model {os.fspath(model)!r} does not exist.')
        unused = [name for name, value in (('checkpoint', checkpoint), ('fuse', fuse),
                                           ('cfg_options', cfg_options)) if value]
        if unused:
            raise ConfigError(f'{", ".join(unused)} apply to a config, not to an exported model '
                              f'({os.fspath(model)}); leave them out.')
        if bf16 and precision not in (None, 'fp32', 'bf16'):
            raise ConfigError(f'bf16 and precision={precision!r} contradict each other; give '
                              'one of them.')
        precision = 'bf16' if bf16 else (precision or 'fp32')
        return ExportedDetector(os.fspath(model), backend, precision, threads)
    if precision not in (None, 'fp32'):
        raise ConfigError(f'precision={precision!r} is for exported models; for a config use '
                          '--bf16.')
    return TorchDetector(model, checkpoint, device, cfg_options, fuse, bf16)
