"""Weights-only checkpoint loading on every supported torch, with one allow-list.

mmengine 0.10's training checkpoints hold a few non-tensor types (the message hub's
``HistoryBuffer``, numpy scalars, arrays and dtypes; the authors' releases also an
``argparse.Namespace``). :func:`mmengine_safe_globals` lists exactly those. They are allowed

* on torch >= 2.6 through ``torch.serialization.add_safe_globals`` (which takes the
  ``(object, 'module.name')`` pairs the getattr stand-in needs) and ``torch.load(weights_only=True)``;
* on older torch, whose weights-only unpickler has a fixed list, through :func:`restricted_load`:
  ``torch.load`` with a pickle module whose ``Unpickler`` resolves torch's own weights-only globals
  plus the same allow-list and refuses every other global.

Either way a file that needs any other type is refused with ``pickle.UnpicklingError``: nothing here
ever unpickles arbitrary objects.
"""
import argparse
import os
import pickle
import types

import numpy as np
import torch

from mmext.compat.torch_ops import TORCH_VERSION


def patching_disabled():
    """True when ``MMEXT_NO_PATCH`` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get('MMEXT_NO_PATCH', '').strip().lower() in ('1', 'true', 'yes', 'on')


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


def _numpy_reconstructors():
    try:  # numpy >= 2 keeps these in numpy._core (numpy.core remains as an alias)
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


def mmengine_safe_globals():
    """The non-tensor types of mmengine 0.10 training checkpoints and the authors' releases, as
    ``add_safe_globals`` takes them (objects, and ``(object, 'module.name')`` pairs)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    _reconstruct, scalar = _numpy_reconstructors()
    dtype_classes = sorted({type(np.dtype(t)) for t in np.sctypeDict.values()},
                           key=lambda c: c.__name__)
    # argparse.Namespace: the authors' training scripts (SHViT, EfficientFormer) store their
    # command-line arguments in released checkpoints; it only holds attributes.
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtype_classes,
            argparse.Namespace,
            (_history_buffer_statistic, '__builtin__.getattr'),
            (_history_buffer_statistic, 'builtins.getattr')]


def safe_globals_supported():
    """torch >= 2.6: ``torch.load`` is weights-only by default and ``add_safe_globals`` takes
    ``(object, 'module.name')`` pairs (pytorch#142153), which the getattr stand-in needs."""
    return TORCH_VERSION >= (2, 6) and hasattr(torch.serialization, 'add_safe_globals')


_registered = False


def allow_mmengine_globals():
    """Add :func:`mmengine_safe_globals` to torch's weights-only allow-list (torch >= 2.6)."""
    global _registered
    if not _registered:
        torch.serialization.add_safe_globals(mmengine_safe_globals())
        _registered = True


# ------------------------------------------------------------------- older torch: an unpickler
def _allowed_globals():
    """``{'module.name': object}`` for the restricted unpickler: torch's own weights-only
    globals, a few plain builtins newer torch allows too, and :func:`mmengine_safe_globals`."""
    import _codecs
    import collections

    from torch import _weights_only_unpickler
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for obj in (collections.OrderedDict, collections.Counter, set, frozenset, bytearray,
                complex, slice, _codecs.encode, torch.device):
        allowed[f'{obj.__module__}.{obj.__qualname__}'] = obj
    allowed['__builtin__.set'] = set
    for entry in mmengine_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        if name is None:
            name = f'{obj.__module__}.{obj.__qualname__}'
        allowed[name] = obj
    _reconstruct, scalar = _numpy_reconstructors()
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # either numpy wrote it
        allowed[f'{module}._reconstruct'] = _reconstruct
        allowed[f'{module}.scalar'] = scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :func:`_allowed_globals`."""

    _allowed = None

    def find_class(self, module, name):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        obj = RestrictedUnpickler._allowed.get(f'{module}.{name}')
        if obj is None:
            raise pickle.UnpicklingError(
                f'Unsupported global: GLOBAL {module}.{name} is not an allowed type for '
                f'weights-only loading')
        return obj


def _restricted_pickle_module():
    module = types.ModuleType('mmext_restricted_pickle')
    module.Unpickler = RestrictedUnpickler
    module.UnpicklingError = pickle.UnpicklingError
    module.load = lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load()
    module.__name__ = 'mmext_restricted_pickle'
    return module


RESTRICTED_PICKLE = _restricted_pickle_module()


def restricted_load(f, map_location=None):
    """``torch.load`` through :class:`RestrictedUnpickler` (any torch version; torch < 2.6's
    weights-only path). Raises ``pickle.UnpicklingError`` for any global outside the list."""
    # torch refuses a pickle_module together with weights_only=True; RESTRICTED_PICKLE's
    # Unpickler is what keeps the load weights-only here (every global outside the allow-list is
    # refused). load_weights_only takes this path only where torch's own one cannot hold the list.
    return torch.load(f, map_location=map_location, pickle_module=RESTRICTED_PICKLE,
                      weights_only=False)


def load_weights_only(f, map_location=None):
    """Load a torch checkpoint allowing tensors, plain containers and the mmengine types only.

    Raises ``pickle.UnpicklingError`` when the file needs any other global."""
    if safe_globals_supported():
        allow_mmengine_globals()
        return torch.load(f, map_location=map_location, weights_only=True)
    return restricted_load(f, map_location)
