"""Whole-detector speed: complete mmdet detectors built from configs, mmext's and mmdet's own.

For each config (a file, or ``mmdet::<path>`` for a config shipped with mmdet) the detector is
built through mmdet's registry with random weights (no checkpoint is read) and timed on one
``1x3xHxW`` tensor, on one device, with ``threads`` CPU threads:

* ``part='network'``: backbone, neck and head forward (``model._forward``), the tensors the
  head returns;
* ``part='predict'``: ``model.predict`` on the same tensor, the network plus the head's
  post-processing (decoding, score threshold, NMS) with the config's own ``test_cfg``, to boxes.

each in ``mode`` ``'eager'`` (as built), ``'deploy'`` (``backbone.switch_to_deploy()``, mmext's
fused backbones; mmdet's own backbones have no such step and are timed eager only, which their
rows say) and, when asked for, ``'bf16'``: backbone (fused where it can be) and neck in bfloat16,
channels-last, the heads in float32 (:class:`mmext.engine.precision.Bf16Module`, what
``tools/test.py --bf16`` runs; a ``skipped`` row where the device has no native bf16). All cases of all configs take turns in interleaved rounds
(:func:`mmext.benchmark.timing.time_cases`), so a shared machine's drift hits every row alike.
Rows also carry ``params_m`` (the whole detector) and ``gflops``: mmengine's FlopAnalyzer through
:func:`mmext.analysis.count_macs` over the network part (one multiply-accumulate = one flop, the
convention of mmengine and of mmdet's ``get_flops``; norms left out).

Random weights make the post-processing cost a property of the untrained head: how many boxes
pass the score threshold into NMS decides it. Rows of ``part='predict'`` give ``detections``,
the boxes predict returned, so that cost can be read beside the time.
"""
import copy
import os
import os.path as osp
from types import SimpleNamespace

import torch

from mmext.benchmark.backbone import check_counts
from mmext.benchmark.environment import device_name, environment
from mmext.benchmark.report import markdown_table, write_json_and_markdown
from mmext.benchmark.timing import time_cases
from mmext.deploy.runners import Runner, skip_reason, threads_context
from mmext.errors import ConfigError
from mmext.utils import error_line

PARTS = ('network', 'predict')
MODES = ('eager', 'deploy', 'bf16')
DEFAULT_MODES = ('eager', 'deploy')
MMDET_PREFIX = 'mmdet::'
NO_FUSING = "eager only: mmdet's own backbone has no switch_to_deploy (nothing to fuse)"
BF16_NOTE = 'backbone and neck in bf16, heads in float32'


# ------------------------------------------------------------------------------------ configs
def resolve_config(spec):
    """The file of ``spec``: a path, or ``mmdet::<path under mmdet's configs/>``."""
    spec = str(spec)
    if spec.startswith(MMDET_PREFIX):
        import mmdet
        root = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
        rel = spec[len(MMDET_PREFIX):]
        path = osp.join(root, rel)
        if not rel.endswith('.py') or not osp.isfile(path):
            folder = osp.join(root, osp.dirname(rel))
            if osp.isdir(folder):
                names = sorted(f for f in os.listdir(folder) if f.endswith('.py'))
                hint = f'{osp.dirname(rel)}/ has {", ".join(names[:8])} ...'
            else:
                hint = f'see the folders of {root}'
            raise ConfigError(f'mmdet {mmdet.__version__} has no config {rel!r} ({hint}).')
        return path
    if not osp.isfile(spec):
        raise ConfigError(f'config file {spec!r} does not exist (a path, or mmdet::<path> for '
                          "one of mmdet's configs, e.g. "
                          'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py).')
    return spec


def build_detector(spec):
    """``(model, cfg)``: the config's detector in eval mode, random weights."""
    from mmext.engine.config import build_config_model
    from mmext.engine.config import detect_codebase, load_config
    path = resolve_config(spec)
    cfg = load_config(path)
    if not cfg.get('model') or detect_codebase(cfg) != 'mmdet':
        raise ConfigError(f'{spec} is not a detector config: it has no mmdet model '
                          '(give an mmdet detector config such as configs/rtmdet/...).')
    model, _, cfg = build_config_model(cfg)
    from mmdet.models.detectors import BaseDetector
    if not isinstance(model, BaseDetector):
        raise ConfigError(f'{spec} is not a detector config: its model is '
                          f'{type(model).__name__}, not an mmdet detector.')
    return model, cfg


def check_shape(shape):
    if (len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0
                               for s in shape)):
        raise ConfigError(f'--shape takes two positive integers H W, not {list(shape)!r}.')
    return tuple(shape)


def _max_stride(model):
    strides = getattr(getattr(model, 'bbox_head', None), 'prior_generator', None)
    strides = getattr(strides, 'strides', None) or [32]
    return max(s[0] if isinstance(s, (tuple, list)) else s for s in strides)


# ------------------------------------------------------------------------------- the two parts
class DetectorPart(torch.nn.Module):
    """``part`` of a detector as a function of one image tensor (see the module docstring)."""

    def __init__(self, model, part, shape, batch=1):
        super().__init__()
        self.model = model
        self.part = part
        from mmdet.structures import DetDataSample
        h, w = shape
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
        self.samples = [DetDataSample(metainfo=meta) for _ in range(batch)]

    def forward(self, x):
        if self.part == 'network':
            return self.model._forward(x, self.samples)
        return self.model.predict(x, self.samples, rescale=False)


def _gflops(model, shape):
    from mmext.benchmark.complexity import count_macs
    return round(count_macs(DetectorPart(model, 'network', shape), (1, 3) + shape) / 1e9, 3)


def _check_runs(model, spec, shape):
    """One network forward at ``shape``; a size the detector cannot take is a ConfigError."""
    try:
        with torch.inference_mode():
            DetectorPart(model, 'network', shape)(torch.zeros((1, 3) + shape))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001
        s = _max_stride(model)
        ok = tuple(-(-d // s) * s for d in shape)
        raise ConfigError(
            f'{spec} cannot take a {shape[0]}x{shape[1]} input ({error_line(exc, 160)}). '
            f'Its heads read strides up to {s}: give --shape in multiples of {s}, e.g. '
            f'{ok[0]} {ok[1]} (its data preprocessor pads images that way).') from None


# -------------------------------------------------------------------------------- the benchmark
def prepare_config(spec, shape, device, threads, seed=0, modes=DEFAULT_MODES):
    """The rows and runners of one config: ``[(row, Runner or None), ...]``."""
    model, cfg = build_detector(spec)
    model = model.to(device)
    _check_runs(model, spec, shape)
    backbone = cfg.model.get('backbone', {})
    fusable = hasattr(model.backbone, 'switch_to_deploy')
    base = dict(config=str(spec), detector=str(cfg.model.get('type')).split('.')[-1],
                backbone=f'{str(backbone.get("type")).split(".")[-1]}'
                         + (f'-{backbone["arch"]}' if 'arch' in backbone else ''),
                source='mmext' if str(backbone.get('type', '')).startswith('mmext.') else 'mmdet',
                input_size=f'{shape[0]}x{shape[1]}', batch=1, device=device,
                device_name=device_name(device), threads=threads, torch=torch.__version__,
                params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                gflops=_gflops(model, shape), status='ok')
    models = {'eager': model}
    if fusable:
        models['deploy'] = copy.deepcopy(model)
        models['deploy'].backbone.switch_to_deploy()
    bf16_skip = skip_reason('bf16', device) if 'bf16' in modes else None
    if 'bf16' in modes and not bf16_skip:
        from mmext.engine.precision import Bf16Module
        models['bf16'] = copy.deepcopy(models.get('deploy', model))
        for name in ('backbone', 'neck'):
            if isinstance(getattr(models['bf16'], name, None), torch.nn.Module):
                setattr(models['bf16'], name, Bf16Module(getattr(models['bf16'], name)))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 3) + shape, generator=gen).to(device)
    cases = []
    for part in PARTS:
        for mode in modes:
            row = dict(base, part=part, mode=mode)
            if mode == 'bf16' and bf16_skip:
                row.update(status=f'skipped: {bf16_skip}')
                cases.append((row, None))
                continue
            if mode not in models:
                row.update(status='skipped', note=NO_FUSING)
                cases.append((row, None))
                continue
            if mode == 'bf16':
                row['note'] = BF16_NOTE + ('' if fusable else ' (backbone not fused: ' +
                                           NO_FUSING.split(': ', 1)[1] + ')')
            elif not fusable:
                row['note'] = NO_FUSING
            module = DetectorPart(models[mode], part, shape).eval()
            if part == 'predict':
                with torch.inference_mode():
                    row['detections'] = int(len(module(x)[0].pred_instances))

            def run(module=module):
                with torch.inference_mode():
                    return module(x)
            cases.append((row, Runner(run)))
    return cases


def run_detector_benchmark(configs, shape=(640, 640), device='cpu', threads=1, warmup=1,
                           iters=3, rounds=2, progress=print, modes=DEFAULT_MODES):
    """Time every config's network and predict in each of ``modes`` (default eager and deploy;
    ``'all'`` for every mode of :data:`MODES`), in interleaved rounds.

    Returns the rows (one per config x part x mode); see the module docstring.
    """
    if not configs:
        raise ConfigError('give at least one config.')
    modes = resolve_detector_modes(modes)
    shape = check_shape(tuple(shape))
    check_counts(warmup=warmup, iters=iters, threads=threads, rounds=rounds)
    if device not in ('cpu', 'cuda'):
        raise ConfigError(f'--device must be cpu or cuda, not {device!r}.')
    if device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda: CUDA is not available on this machine.')
    for spec in configs:  # every config resolves before any is built or timed
        resolve_config(spec)
    cases = []
    with threads_context(threads):
        for spec in configs:
            progress(f'building {spec}')
            cases += prepare_config(spec, shape, device, threads, modes=modes)
    progress(f'timing {sum(r is not None for _, r in cases)} cases in {rounds} interleaved '
             f'rounds ({warmup} warm-up, {iters} timed runs each)')
    settings = dict(threads=threads, warmup=warmup, iters=iters)
    return time_cases(cases, SimpleNamespace(device=device), settings, rounds)


def resolve_detector_modes(modes):
    """``modes`` as a tuple of :data:`MODES` (``'all'`` or ``['all']``: every one)."""
    modes = [modes] if isinstance(modes, str) else list(modes or DEFAULT_MODES)
    if 'all' in modes:
        return MODES
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f'unknown detector mode {unknown[0] if unknown else modes!r}; choose '
                          f'from {", ".join(MODES)} or all')
    return tuple(dict.fromkeys(modes))


# ----------------------------------------------------------------------------------- report
MD_COLUMNS = [('config', 'config'), ('detector', 'detector'), ('backbone', 'backbone'),
              ('params_m', 'params (M)'), ('gflops', 'GFLOPs'), ('part', 'part'),
              ('mode', 'mode'), ('input_size', 'input'), ('threads', 'threads'),
              ('median_ms', 'median ms'), ('min_ms', 'min ms'), ('max_ms', 'max ms'),
              ('detections', 'boxes'), ('status', 'status'), ('note', 'note')]


def to_markdown(rows, meta=None):
    lines = ['# Detector benchmark', '']
    for key in ('date', 'torch', 'cpu', 'gpu', 'shape', 'threads', 'warmup', 'iters', 'rounds'):
        if meta and meta.get(key) is not None:
            lines.append(f'- {key}: {meta[key]}')
    lines += [''] + markdown_table(rows, MD_COLUMNS)
    return '\n'.join(lines) + '\n'


def write_detector_results(rows, json_path, meta=None):
    """``{'meta', 'rows'}`` as JSON at ``json_path`` and the markdown table beside it (.md)."""
    return write_json_and_markdown(rows, dict(environment(), **(meta or {})), json_path,
                                   markdown=to_markdown)
