"""What ``train`` and ``test`` share: loading a config, telling mmdet from mmseg configs,
registering the right library, checking that the data is there, adapting to CPU-only machines,
building the runner and reporting metrics."""
import copy
import os.path as osp

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook

from mmext.errors import ConfigError, DatasetNotFoundError

CODEBASES = ('mmdet', 'mmseg')

# Model types that tell a config's codebase when ``default_scope`` is missing.
_SEG_MODEL_TYPES = ('EncoderDecoder', 'CascadeEncoderDecoder', 'SegTTAModel')


# --------------------------------------------------------------------------------------- config
def load_config(config, cfg_options=None):
    """An mmengine ``Config`` from a path (or a Config), with ``cfg_options`` merged in."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        config = str(config)
        if not osp.isfile(config):
            raise ConfigError(f'config file {config!r} does not exist (run from the repository '
                              'root, or pass the path of a file under configs/).')
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def detect_codebase(cfg):
    """``'mmdet'`` or ``'mmseg'``, from ``default_scope`` or else from the model type."""
    scope = cfg.get('default_scope')
    if scope in CODEBASES:
        return scope
    model = cfg.get('model') or {}
    model_type = str(model.get('type', ''))
    if '.' in model_type and model_type.split('.', 1)[0] in CODEBASES:
        return model_type.split('.', 1)[0]
    if model_type in _SEG_MODEL_TYPES or 'decode_head' in model:
        return 'mmseg'
    if model_type:
        return 'mmdet'
    raise ConfigError('cannot tell whether the config is for mmdet or mmseg: set '
                      "default_scope = 'mmdet' or 'mmseg' in it.")


def register_codebase(codebase):
    """Register the codebase's modules as its official tools do (and mmext's models)."""
    if codebase == 'mmdet':
        from mmdet.utils import register_all_modules
    elif codebase == 'mmseg':
        from mmseg.utils import register_all_modules
    else:
        raise ConfigError(f'unknown codebase {codebase!r}; expected one of {CODEBASES}')
    register_all_modules(init_default_scope=False)
    import mmext  # noqa: F401  (compat + registration into mmdet/mmseg MODELS)


def set_work_dir(cfg, config, work_dir=None):
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(str(config)))[0] if not isinstance(config, Config) \
            else 'mmext'
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg.work_dir


# ------------------------------------------------------------------------------ CPU / launcher
def _replace_syncbn(node):
    """Turn every ``type='SyncBN'`` in a config tree into ``'BN'``; returns the count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_syncbn(value)
    return count


def adapt_to_device(cfg, launcher='none'):
    """Make a GPU config run on a CPU-only machine as well.

    Without CUDA: distributed runs use gloo (mmengine's default is NCCL), SyncBN becomes BN
    (torch's SyncBatchNorm needs a GPU), and the DDP wrapper gets no ``device_ids``.
    """
    cfg.launcher = launcher
    if torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    env_cfg.setdefault('dist_cfg', ConfigDict())
    env_cfg['dist_cfg']['backend'] = 'gloo'
    env_cfg['cudnn_benchmark'] = False
    if 'model' in cfg:
        _replace_syncbn(cfg.model)
    if launcher != 'none':
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
        wrapper['device_ids'] = None
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
    return cfg


def init_cpu_distributed(cfg):
    """mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which a CPU-only torch lacks;
    start the process group (gloo, from torchrun's env vars) ourselves so the runner finds it.

    Returns True when this function started the group (see :func:`finish_distributed`)."""
    if torch.cuda.is_available() or cfg.get('launcher', 'none') != 'pytorch':
        return False
    import torch.distributed as dist
    if not dist.is_available() or dist.is_initialized():
        return False
    import datetime
    kwargs = {}
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)
    return True


def finish_distributed():
    """Wait for every rank, then tear down the process group we started: a gloo group left to
    the interpreter's exit can abort the process ('terminate called without an active
    exception') after the work is done."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# -------------------------------------------------------------------------------- data checks
_HOW_TO_GET = {
    'coco': ('COCO 2017: download train2017.zip, val2017.zip and annotations_trainval2017.zip '
             'from https://cocodataset.org/#download and unzip them so that the folder holds '
             'annotations/instances_{train,val}2017.json, train2017/ and val2017/ (the configs '
             "expect data/coco/ in the repository root; a symlink works)"),
    'ade20k': ('ADE20K (SceneParsing): download ADEChallengeData2016.zip from '
               'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip and unzip '
               'it under data/ade/ (the configs expect data/ade/ADEChallengeData2016/ with '
               'images/{training,validation} and annotations/{training,validation})'),
}
_DEMO_HINT = ('To try mmext without the real data, `make demo` trains Mask R-CNN on a small '
              'generated data set; mmext.demo.make_coco_demo(root) / make_ade_demo(root) write '
              'COCO- and ADE20K-format sets you can point a config at with --cfg-options '
              '(data_root, ann_file, data_prefix). A different location of the real data: '
              '--cfg-options train_dataloader.dataset.data_root=... (and the val/test ones).')


def _dataset_kind(dataset_cfg):
    text = ' '.join(str(dataset_cfg.get(k, '')) for k in ('type', 'data_root', 'ann_file'))
    text = text.lower()
    if 'ade' in text:
        return 'ade20k'
    if 'coco' in text:
        return 'coco'
    return None


def _leaf_datasets(dataset_cfg):
    """The datasets inside wrappers (RepeatDataset, ClassBalancedDataset, ConcatDataset ...)."""
    if not isinstance(dataset_cfg, dict):
        return []
    if 'dataset' in dataset_cfg:
        return _leaf_datasets(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        leaves = []
        for sub in dataset_cfg['datasets']:
            leaves += _leaf_datasets(sub)
        return leaves
    return [dataset_cfg]


def _is_remote(path):
    return '://' in str(path)


def _join(root, path):
    if not path:
        return root
    if root and not osp.isabs(str(path)) and not _is_remote(path):
        return osp.join(str(root), str(path))
    return str(path)


def _missing_paths(dataset_cfg):
    """(kind, path) pairs a dataset config needs but that are not on disk."""
    if dataset_cfg.get('backend_args'):
        return []  # not local files: leave it to the file backend
    root = dataset_cfg.get('data_root') or ''
    missing = []
    if root and not _is_remote(root) and not osp.isdir(str(root)):
        return [('data_root', str(root))]
    ann_file = dataset_cfg.get('ann_file')
    if ann_file:
        path = _join(root, ann_file)
        if not _is_remote(path) and not osp.exists(path):
            missing.append(('ann_file', path))
    prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefix, dict):
        for key, value in prefix.items():
            if value in (None, '') and not root:
                continue
            path = _join(root, value)
            if not _is_remote(path) and not osp.exists(path):
                missing.append((f'data_prefix.{key}', path))
    return missing


def _evaluator_missing(evaluator_cfg):
    missing = []
    evaluators = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg]
    for ev in evaluators:
        if isinstance(ev, dict) and ev.get('ann_file') and not ev.get('format_only'):
            path = str(ev['ann_file'])
            if not _is_remote(path) and not osp.exists(path):
                missing.append(('evaluator ann_file', path))
    return missing


def check_datasets(cfg, splits):
    """Raise :class:`DatasetNotFoundError` when a dataset the run needs is missing.

    ``splits``: names among 'train', 'val', 'test' (their ``*_dataloader`` and ``*_evaluator``).
    Called before the runner is built, so the user gets one clear message instead of a
    traceback from deep inside the dataset code.
    """
    problems, kinds = [], set()
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for ds in _leaf_datasets(loader.get('dataset')):
            found = _missing_paths(ds)
            if found:
                kinds.add(_dataset_kind(ds))
                problems += [(split, what, path) for what, path in found]
        if split in ('val', 'test') and cfg.get(f'{split}_evaluator'):
            found = _evaluator_missing(cfg.get(f'{split}_evaluator'))
            if found:
                problems += [(split, what, path) for what, path in found]
    if not problems:
        return
    seen, lines = set(), []
    for split, what, path in problems:
        if path in seen:
            continue
        seen.add(path)
        lines.append(f'  {split} {what}: {osp.abspath(path) if not _is_remote(path) else path}')
    how = [_HOW_TO_GET[k] for k in ('coco', 'ade20k') if k in kinds]
    if not how:
        how = list(_HOW_TO_GET.values())
    raise DatasetNotFoundError(
        'dataset not found; the config expects:\n' + '\n'.join(lines) + '\n' +
        '\n'.join(f'How to get it: {h}.' for h in how) + '\n' + _DEMO_HINT)


# ---------------------------------------------------------------------------- runner and hooks
def build_runner(cfg):
    """The runner for ``cfg``; ``runner.mmext_owns_dist`` tells whether mmext started the
    process group (then :func:`run_and_finish` tears it down)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    owns_dist = init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.mmext_owns_dist = owns_dist
    return runner


def run_and_finish(runner, method):
    """``runner.train()`` or ``runner.test()``, then the process-group teardown if ours."""
    try:
        return getattr(runner, method)()
    finally:
        if getattr(runner, 'mmext_owns_dist', False):
            finish_distributed()


class MetricsRecorder(Hook):
    """Keeps the metrics of the last validation (train) or test run."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)

    def after_test_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)


class FuseBackboneHook(Hook):
    """Calls ``backbone.switch_to_deploy()`` once the checkpoint is loaded, before testing."""

    priority = 'VERY_LOW'  # after EMA and other hooks that swap weights in before_test

    def __init__(self):
        self.fused = False

    def before_test(self, runner):
        from mmengine.model import is_model_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'switch_to_deploy'):
            backbone.switch_to_deploy()
            self.fused = True
            runner.logger.info('mmext: fused the backbone (switch_to_deploy) for testing.')
        else:
            runner.logger.warning('mmext: --fuse asked, but the model\'s backbone has no '
                                  'switch_to_deploy(); testing it unfused.')


# ------------------------------------------------------------------------------------ metrics
def format_metrics(metrics, title='metrics'):
    """A readable block: one ``name: value`` line per metric."""
    if not metrics:
        return f'{title}: (none)'
    width = max(len(str(k)) for k in metrics)
    lines = [f'{title}:']
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f'{value:.4f}'
        lines.append(f'  {str(key).ljust(width)}  {value}')
    return '\n'.join(lines)


_HEADLINE_NAMES = {'coco/bbox_mAP': 'bbox AP', 'coco/segm_mAP': 'segm AP', 'mIoU': 'mIoU'}


def print_metrics(metrics, title, rank=None):
    """Print every metric, then a one-line summary (bbox/segm AP or mIoU); rank 0 only
    (``rank``: the runner's, which stays right after the process group is gone)."""
    from mmengine.dist import get_rank
    if (get_rank() if rank is None else rank) != 0:
        return
    print(format_metrics(metrics, title), flush=True)
    summary = [f'{name} {metrics[key]:.4f}' if isinstance(metrics[key], float)
               else f'{name} {metrics[key]}'
               for key, name in _HEADLINE_NAMES.items() if key in (metrics or {})]
    if summary:
        print('mmext: ' + ', '.join(summary), flush=True)
