"""mmengine 0.10 changes that mmext's own entry points (tools, ``mmext.apis``) apply while they run.

Neither is applied at ``import mmext``: each is a context manager that restores mmengine on exit.

* :func:`weights_only_checkpoints`: mmengine's loader of local checkpoint files (``--resume``,
  ``load_from``, ``init_cfg=dict(type='Pretrained')``) calls ``torch.load`` without
  ``weights_only``: on torch < 2.6 that unpickles anything; on torch >= 2.6 a refusal surfaces deep
  in mmengine. Inside the block it loads through :func:`mmext.compat.load_weights_only` and turns
  a refusal into one :class:`~mmext.errors.CheckpointError`.
* :func:`cached_config_metainfo`: mmengine parses every metafile of mmdet/mmseg (~200 YAML files,
  ~0.7 s) for each ``mmdet::``/``mmseg::`` base of a config; inside the block, once per process.

Both check that mmengine has the functions they replace (0.10 series, same signatures) and
otherwise change nothing; ``MMEXT_NO_PATCH=1`` turns them off.
"""
import contextlib
import functools
import inspect
import os.path as osp
import pickle

from mmext.compat.checkpoint import load_weights_only, patching_disabled
from mmext.errors import CheckpointError, _unpickling_reason


def load_local_weights_only(filename, map_location=None):
    """mmengine's local-file checkpoint loader, weights-only on every torch, with clear errors."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointError(
            f'Checkpoint not found: {filename!r}. Check the path given to tools/test.py, '
            f'--resume or load_from.')
    try:
        return load_weights_only(filename, map_location=map_location)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f'Refusing to load {filename!r}: it holds pickled objects that are neither tensors nor '
            f'the types mmengine checkpoints use, and loading them could run arbitrary code. '
            f'mmext loads every checkpoint weights-only (weights_only=True). If you trust the '
            f'file, re-save its state dict alone. Details: {_unpickling_reason(exc)}') from None


def _mmengine_0_10():
    import mmengine
    from mmext.compat.torch_ops import _version
    return (0, 10) <= _version(mmengine.__version__) < (1, 0)


def local_loader_fits():
    """mmengine 0.10's ``CheckpointLoader`` with ``register_scheme(..., force=)``."""
    from mmengine.runner.checkpoint import CheckpointLoader
    return (_mmengine_0_10() and hasattr(CheckpointLoader, 'register_scheme')
            and isinstance(getattr(CheckpointLoader, '_schemes', None), dict)
            and 'force' in inspect.signature(CheckpointLoader.register_scheme).parameters)


@contextlib.contextmanager
def weights_only_checkpoints():
    """Within the block mmengine loads local checkpoint files weights-only (module docstring)."""
    if patching_disabled() or not local_loader_fits():
        yield
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = CheckpointLoader._schemes
    previous = schemes.get('')
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_local_weights_only)
    try:
        yield
    finally:
        if previous is None:
            schemes.pop('', None)
        else:
            CheckpointLoader.register_scheme(prefixes='', force=True)(previous)


@functools.lru_cache(maxsize=None)
def _config_index(package_path):
    """``{config name: metafile entry}`` of an installed OpenMMLab package, parsed once."""
    from mmengine.fileio import load
    index = {}
    mim = osp.join(package_path, '.mim')
    for meta_path in load(osp.join(mim, 'model-index.yml'))['Import']:
        for model_cfg in load(osp.join(mim, meta_path)).get('Models', []):
            if 'Config' in model_cfg:
                index.setdefault(model_cfg['Config'].partition('/')[-1], model_cfg)
    return index


def _cfg_metainfo_cached(package_path, cfg_path):
    """mmengine's ``_get_cfg_metainfo``, from the once-parsed index."""
    index = _config_index(package_path)
    if cfg_path not in index:
        raise ValueError(f'{cfg_path} is not an experiment config of {package_path}')
    return index[cfg_path]


def metainfo_fits():
    from mmengine.config import utils as config_utils
    fn = getattr(config_utils, '_get_cfg_metainfo', None)
    return (_mmengine_0_10() and fn is not None
            and list(inspect.signature(fn).parameters) == ['package_path', 'cfg_path'])


@contextlib.contextmanager
def cached_config_metainfo():
    """Within the block mmengine parses each package's metafiles once (module docstring)."""
    if patching_disabled() or not metainfo_fits():
        yield
        return
    from mmengine.config import utils as config_utils
    previous = config_utils._get_cfg_metainfo
    config_utils._get_cfg_metainfo = _cfg_metainfo_cached
    try:
        yield
    finally:
        config_utils._get_cfg_metainfo = previous
