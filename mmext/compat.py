"""torch >= 2.6 checkpoint loading for mmengine, without switching the safety off.

torch >= 2.6 loads checkpoints with ``weights_only=True`` by default. mmengine 0.10.7 calls
``torch.load`` without the argument, and its own training checkpoints hold a few non-tensor types
(the message hub's ``HistoryBuffer``, numpy scalars, arrays and dtypes), so ``--resume``,
``load_from`` and ``tools/test.py CKPT`` fail. This module fixes that once, at ``import mmext``:

* it allow-lists exactly those types for the weights-only unpickler
  (``torch.serialization.add_safe_globals``), plus a stand-in for the ``getattr`` a pickled
  ``HistoryBuffer`` uses, which resolves its statistics methods and nothing else, and
* it replaces mmengine's loader of local files with one that passes ``weights_only=True``
  explicitly and turns a refusal into a :class:`~mmext.errors.CheckpointError` that says why.

Nothing here ever switches the weights-only safety off: a file that needs any other type is refused.

It also makes mmengine's config loading parse the installed packages' metafiles once per process
instead of once per ``mmdet::``/``mmseg::`` base (about 3 s per config otherwise).

Each patch is applied only where it is needed and known to fit (:data:`PATCHES` says which and
why): the allow-list and the weights-only loader need torch >= 2.6 (weights-only by default there,
and ``add_safe_globals`` with ``(object, name)`` pairs); the loader and metafile patches replace
functions of mmengine 0.10 (checked by version and by the functions' signatures). Setting
``MMEXT_NO_PATCH=1`` turns them all off: mmext's own loader does not depend on them (it always
passes ``weights_only=True``), but mmengine then cannot resume its own checkpoints on torch >= 2.6.
"""
import argparse
import functools
import inspect
import os
import os.path as osp
import pickle

import numpy as np
import torch

from mmext.errors import CheckpointError, _unpickling_reason


def _history_buffer_statistic(owner, name):
    """Stands in for ``getattr`` while unpickling, resolving HistoryBuffer's statistics only.

    A pickled ``HistoryBuffer`` refers to its statistics methods (``min``, ``max``, ``mean``,
    ``current``, ...) as ``getattr(HistoryBuffer, name)``. Allowing the real ``getattr`` would let a
    file reach any attribute of any allowed object; this allows exactly those methods.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    method = getattr(HistoryBuffer, name, None) if isinstance(name, str) else None
    if owner is not HistoryBuffer or name.startswith('_') or not callable(method):
        raise pickle.UnpicklingError(
            f'Unsupported global: getattr({owner!r}, {name!r}) is not a HistoryBuffer statistic')
    return method


def mmengine_safe_globals():
    """The non-tensor types found in mmengine 0.10 training checkpoints and the authors' releases."""
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 1.25 keeps these in numpy._core / numpy.core.multiarray
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = sorted({type(np.dtype(t)) for t in np.sctypeDict.values()},
                           key=lambda c: c.__name__)
    # argparse.Namespace: the authors' training scripts (SHViT, EfficientFormer) store their
    # command-line arguments in released checkpoints; it only holds attributes.
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtype_classes,
            argparse.Namespace,
            (_history_buffer_statistic, '__builtin__.getattr'),
            (_history_buffer_statistic, 'builtins.getattr')]


def load_local_weights_only(filename, map_location=None):
    """mmengine's local-file checkpoint loader, with ``weights_only=True`` and clear errors."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise CheckpointError(
            f'Checkpoint not found: {filename!r}. Check the path given to tools/test.py, '
            f'--resume or load_from.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f'Refusing to load {filename!r}: it holds pickled objects that are neither tensors nor '
            f'the types mmengine checkpoints use, and loading them could run arbitrary code. '
            f'mmext loads every checkpoint with weights_only=True. If you trust the file, re-save '
            f'its state dict alone. Details: {_unpickling_reason(exc)}') from None


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
    """mmengine's ``_get_cfg_metainfo`` without re-reading every metafile on each call.

    mmengine parses all of a package's metafiles (about 200 YAML files for mmdet, ~0.7 s) for
    every ``mmdet::``/``mmseg::`` base of every config it loads; the result only depends on the
    installed package, so mmext parses them once per process.
    """
    index = _config_index(package_path)
    if cfg_path not in index:
        raise ValueError(f'{cfg_path} is not an experiment config of {package_path}')
    return index[cfg_path]


def _version(text):
    """``'2.13.0+cpu'`` -> ``(2, 13)``."""
    parts = []
    for piece in text.split('.')[:2]:
        digits = ''.join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _torch_allows_globals():
    """torch >= 2.6: weights-only loading is the default (the patches are needed) and
    ``add_safe_globals`` takes ``(object, 'module.name')`` pairs (pytorch#142153), which the
    getattr stand-in needs. Older torch loads mmengine's checkpoints without these patches."""
    return (_version(torch.__version__) >= (2, 6)
            and hasattr(torch.serialization, 'add_safe_globals'))


def _mmengine_0_10():
    import mmengine
    return (0, 10) <= _version(mmengine.__version__) < (1, 0)


def _mmengine_local_loader_fits():
    from mmengine.runner.checkpoint import CheckpointLoader
    return (_torch_allows_globals() and _mmengine_0_10()
            and hasattr(CheckpointLoader, 'register_scheme')
            and 'force' in inspect.signature(CheckpointLoader.register_scheme).parameters)


def _mmengine_metainfo_fits():
    from mmengine.config import utils as config_utils
    fn = getattr(config_utils, '_get_cfg_metainfo', None)
    return (_mmengine_0_10() and fn is not None
            and list(inspect.signature(fn).parameters) == ['package_path', 'cfg_path'])


def _allow_mmengine_globals():
    torch.serialization.add_safe_globals(mmengine_safe_globals())


def _weights_only_local_loader():
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_local_weights_only)


def _cached_metainfo():
    from mmengine.config import utils as config_utils
    config_utils._get_cfg_metainfo = _cfg_metainfo_cached


#: ``(name, why, applies, apply)``: each import-time patch, the reason, and its version guard.
PATCHES = (
    ('torch safe globals',
     'allow-lists the types in mmengine 0.10 training checkpoints (HistoryBuffer, numpy scalars, '
     'arrays, dtypes, argparse.Namespace, a HistoryBuffer-only getattr) for weights-only loading',
     _torch_allows_globals, _allow_mmengine_globals),
    ('mmengine local checkpoint loader',
     'mmengine 0.10 calls torch.load without weights_only (torch >= 2.6 then refuses its own '
     'checkpoints); mmext passes weights_only=True explicitly, with the allow-list above, and '
     'turns a refusal into one CheckpointError',
     _mmengine_local_loader_fits, _weights_only_local_loader),
    ('mmengine config metainfo cache',
     "mmengine 0.10 parses every metafile of mmdet/mmseg for each 'mmdet::' base; parsed once",
     _mmengine_metainfo_fits, _cached_metainfo),
)

_installed = False
#: names of the patches :func:`install` applied in this process
APPLIED = []


def patching_disabled():
    """True when ``MMEXT_NO_PATCH`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get('MMEXT_NO_PATCH', '').strip().lower() in ('1', 'true', 'yes', 'on')


def install():
    """Apply each patch of :data:`PATCHES` whose guard holds, unless ``MMEXT_NO_PATCH`` is set."""
    global _installed
    if _installed:
        return
    _installed = True
    if patching_disabled():
        return
    for name, _, applies, apply in PATCHES:
        if applies():
            apply()
            APPLIED.append(name)
