"""Deploy-time code: building a fused backbone, ONNX export and verification, and the runners
that execute a model in each mode (:mod:`mmext.deploy.runners`)."""
from mmext.deploy.build import build_backbone
from mmext.deploy.detector_export import DetectorWrapper, export_detector_model
from mmext.deploy.detector_runtime import DetectorSession, read_metadata
from mmext.deploy.export import export_backbone, export_onnx, ort_session, verify_onnx
from mmext.deploy.runners import MODES, Runner, make_runner, skip_reason

__all__ = ['build_backbone', 'export_backbone', 'export_onnx', 'ort_session', 'verify_onnx',
           'MODES', 'Runner', 'make_runner', 'skip_reason', 'DetectorWrapper',
           'export_detector_model', 'DetectorSession', 'read_metadata']
