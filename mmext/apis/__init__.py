"""mmext's public Python API (as ``mmdet.apis`` / ``mmpretrain.apis``).

* :func:`train`, :func:`test` -- run an mmdet or mmseg config through mmengine's Runner;
* :func:`run_demo` -- ``make demo``: generated data, a short training, AP and backbone latency;
* :func:`build_backbone`, :func:`export_backbone` -- an mmext backbone by family and arch, fused,
  and its ONNX export (verified with ONNX Runtime);
* :func:`export_detector` -- a whole single-stage detector (decoding and NMS included) to ONNX;
* :func:`quantize_detector` -- that file to int8 for ONNX Runtime (``.onnx``) or OpenVINO
  (``.xml``), calibrated on images;
* :func:`run_benchmark`, :func:`measure_latency` -- backbone speed;
* :func:`get_flops`, :func:`summarize` -- complexity and result summaries;
* :func:`predict` -- a detector (config + checkpoint, or an exported ``.onnx``) on images,
  folders, globs and videos: annotated outputs, DetInferencer-style JSON, per-part timings.

These are plain functions, bound once at import; ``tools/*.py`` only parse arguments and call them.
Each checks the types of its arguments first (:mod:`mmext.apis.checks`): a wrong one is one
:class:`~mmext.errors.ArgumentError` naming it, before any work.
"""
import functools
import inspect
import os
import os.path as osp

from mmext.analysis.flops import get_flops as _get_flops
from mmext.analysis.summarize import summarize as _summarize
from mmext.apis.checks import checked
from mmext.apis.demo import run_demo
from mmext.apis.evaluation import test
from mmext.apis.export_detector import export_detector as _export_detector
from mmext.apis.predict import predict as _predict
from mmext.apis.quantize_detector import quantize_detector as _quantize_detector
from mmext.apis.training import train
from mmext.benchmark import measure_latency as _measure_latency
from mmext.benchmark import run_benchmark as _run_benchmark
from mmext.checkpoints.files import normal_mode, writable_folder
from mmext.deploy import build_backbone as _build_backbone
from mmext.deploy import export_backbone as _export_backbone

get_flops = checked(config='config', type='str', arch='arch', input_size='ints', part='str',
                    cfg_options='dict', count_norms='bool')(_get_flops)
build_backbone = checked(type='str', arch='arch', checkpoint='path', out_indices='ints',
                         deploy='bool')(_build_backbone)
measure_latency = checked(model='module', input_shape='shape', mode='str', warmup='int',
                          iters='int', threads='int')(_measure_latency)
run_benchmark = checked(
    archs='strs', protocols='strs', modes='strs', tiny='bool', warmup='int', iters='int',
    threads='int', amp='bool', batch='int', compare_timm='bool', reference='bool', check='bool',
    compile_kwargs='dict', progress='bool', tmp_dir='path', seed='int', rounds='int',
    calib='dict', peaks='bool', peak_n='int', meta='dict')(_run_benchmark)


@checked(type='str', arch='arch', out='path', checkpoint='path', sizes='sizes', opset='int',
         exporter='str', tol='number', dynamic='bool', check='bool', model='module',
         force='bool')
@functools.wraps(_export_backbone)
def export_backbone(*args, **kwargs):
    # the .onnx file gets the permissions of any file the user creates (0644 under umask 022),
    # not those of the temporary file it was renamed from (0600)
    info = _export_backbone(*args, **kwargs)
    if osp.isfile(info['path']):
        try:
            os.chmod(info['path'], normal_mode())
        except OSError:  # another user's file replaced under --force: keep its mode
            pass
    return info


export_detector = checked(
    config='config', checkpoint='path', out='path', input_size='ints', normalize_in_graph='bool',
    dynamic='bool', opset='int', force='bool', cfg_options='dict')(_export_detector)

quantize_detector = checked(onnx_path='path', out='path', images='paths', num='int',
                            model_type='str', force='bool')(_quantize_detector)


@checked(work_dirs='paths', benchmark='paths', out_dir='path', latency_protocol='str',
         latency_mode='str', include_paper='bool', latest_only='bool', make_plot='bool',
         allow_empty='bool', detector_part='str', detector_mode='str')
@functools.wraps(_summarize)
def summarize(*args, **kwargs):
    # an existing out_dir is checked to be writable first (a read-only one would fail after
    # the work, between its three files)
    bound = inspect.signature(_summarize).bind(*args, **kwargs)
    bound.apply_defaults()
    out_dir = bound.arguments['out_dir']
    if osp.isdir(out_dir):
        writable_folder(out_dir, 'output folder (--out)')
    return _summarize(*args, **kwargs)


predict = checked(model='config', source='paths', checkpoint='path', out_dir='path',
                  score_thr='number', device='str', cfg_options='dict', fuse='bool', bf16='bool',
                  backend='str', precision='str', threads='int', save_vis='bool',
                  save_pred='bool', force='bool', progress='bool', warmup='bool',
                  verbose='bool')(_predict)

__all__ = ['train', 'test', 'run_demo', 'build_backbone', 'export_backbone', 'run_benchmark',
           'measure_latency', 'get_flops', 'summarize', 'predict', 'export_detector',
           'quantize_detector']
