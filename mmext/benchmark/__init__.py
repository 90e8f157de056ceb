"""Backbone speed: protocols, timing, the benchmark run and its report.

:func:`run_benchmark` times backbones under fixed protocols (:data:`PROTOCOLS`) in the execution
modes of :mod:`mmext.deploy.runners`; :func:`write_results` writes JSON and a markdown table.
"""
from mmext.benchmark.backbone import case_settings, run_benchmark
from mmext.benchmark.environment import environment
from mmext.benchmark.models import build_mmext, build_timm
from mmext.benchmark.protocols import (ARCHS, DEFAULT_MODES, PROTOCOLS, TINY, Arch, Protocol,
                                       resolve_archs, resolve_modes, resolve_protocols)
from mmext.benchmark.report import load_results, to_markdown, write_results
from mmext.benchmark.timing import measure_latency, time_cases, time_runner
from mmext.deploy.runners import MODES, make_runner

__all__ = ['ARCHS', 'PROTOCOLS', 'MODES', 'DEFAULT_MODES', 'TINY', 'Arch', 'Protocol',
           'run_benchmark', 'write_results', 'load_results', 'to_markdown', 'environment',
           'make_runner', 'time_runner', 'time_cases', 'measure_latency', 'build_mmext',
           'build_timm', 'resolve_archs', 'resolve_protocols', 'resolve_modes', 'case_settings']
