"""mmext's public Python API (as ``mmdet.apis`` / ``mmpretrain.apis``).

* :func:`train`, :func:`test` -- run an mmdet or mmseg config through mmengine's Runner;
* :func:`run_demo` -- ``make demo``: generated data, a short training, AP and backbone latency;
* :func:`build_backbone`, :func:`export_backbone` -- an mmext backbone by family and arch, fused,
  and its ONNX export (verified with ONNX Runtime);
* :func:`run_benchmark`, :func:`measure_latency` -- backbone speed;
* :func:`get_flops`, :func:`summarize` -- complexity and result summaries.

These are plain functions, bound once at import; ``tools/*.py`` only parse arguments and call them.
"""
from mmext.analysis.flops import get_flops
from mmext.analysis.summarize import summarize
from mmext.apis.demo import run_demo
from mmext.apis.evaluation import test
from mmext.apis.training import train
from mmext.benchmark import measure_latency, run_benchmark
from mmext.deploy import build_backbone, export_backbone

__all__ = ['train', 'test', 'run_demo', 'build_backbone', 'export_backbone', 'run_benchmark',
           'measure_latency', 'get_flops', 'summarize']
