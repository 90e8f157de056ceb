"""Checking, before anything is built, that the datasets a config needs are on disk."""
import os.path as osp

from mmext.errors import DatasetNotFoundError
from mmext.utils import is_remote

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


def _join(root, path):
    if not path:
        return root
    if root and not osp.isabs(str(path)) and not is_remote(path):
        return osp.join(str(root), str(path))
    return str(path)


def _missing_paths(dataset_cfg):
    """(kind, path) pairs a dataset config needs but that are not on disk."""
    if dataset_cfg.get('backend_args'):
        return []  # not local files: leave it to the file backend
    root = dataset_cfg.get('data_root') or ''
    missing = []
    if root and not is_remote(root) and not osp.isdir(str(root)):
        return [('data_root', str(root))]
    ann_file = dataset_cfg.get('ann_file')
    if ann_file:
        path = _join(root, ann_file)
        if not is_remote(path) and not osp.exists(path):
            missing.append(('ann_file', path))
    prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefix, dict):
        for key, value in prefix.items():
            if value in (None, '') and not root:
                continue
            path = _join(root, value)
            if not is_remote(path) and not osp.exists(path):
                missing.append((f'data_prefix.{key}', path))
    return missing


def _evaluator_missing(evaluator_cfg):
    missing = []
    evaluators = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg]
    for ev in evaluators:
        if isinstance(ev, dict) and ev.get('ann_file') and not ev.get('format_only'):
            path = str(ev['ann_file'])
            if not is_remote(path) and not osp.exists(path):
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
        lines.append(f'  {split} {what}: {osp.abspath(path) if not is_remote(path) else path}')
    how = [_HOW_TO_GET[k] for k in ('coco', 'ade20k') if k in kinds]
    if not how:
        how = list(_HOW_TO_GET.values())
    raise DatasetNotFoundError(
        'dataset not found; the config expects:\n' + '\n'.join(lines) + '\n' +
        '\n'.join(f'How to get it: {h}.' for h in how) + '\n' + _DEMO_HINT)

