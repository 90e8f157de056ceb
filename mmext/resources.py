"""Where mmext's configs live, in a git checkout or an installed wheel, and ``mmext::`` inheritance.

Two layouts hold the same files:

* **a checkout** (``git clone``; ``make install`` / ``pip install -e .``, or the repository root on
  ``sys.path``): ``configs/``, ``tools/`` and ``model-index.yml`` sit next to the ``mmext`` package
  at the repository root;
* **an installed wheel** (``pip install .``, ``pip install mmext-*.whl``): setup.py copies them into
  the package at build time, as OpenMMLab packages do: ``mmext/.mim/configs``, ``mmext/.mim/tools``
  and ``mmext/.mim/model-index.yml``.

:func:`config_root`, :func:`config_path` and :func:`model_index_path` find them in either. A
checkout wins over a ``mmext/.mim`` that happens to exist in the source tree (an old copy must not
shadow the files being edited).

``mmext::`` inheritance
-----------------------
A user's config can inherit from mmext's as from mmdet's::

    _base_ = 'mmext::mask_rcnn/shvit_s4_fpn_1x_coco.py'

mmengine 0.10 resolves ``'<name>::<path>'`` only for names in its own table
(``mmengine.config.utils.MODULE2PACKAGE``) and then looks for ``<installed path>/.mim/configs/<path>``,
where the installed path comes from the distribution's metadata. That is wrong for mmext twice
over: the name is not in the table, and for an editable install (PEP 660) mmengine's
``get_installed_path`` answers ``site-packages/mmext``, which does not exist (a checkout has no
``.mim`` either). So :func:`register_config_package`, run at ``import mmext``:

1. adds ``'mmext': 'mmext'`` to ``MODULE2PACKAGE`` (so every mmengine API that checks the table,
   such as ``mmengine.hub``, accepts the name), and
2. wraps ``mmengine.config.Config._get_cfg_path`` so that an ``mmext::`` path resolves through
   :func:`config_path` (checkout or ``.mim``); every other path goes to mmengine unchanged.

An ``mmext::`` base is read as if the user had given the file's path: mmext's configs are mmdet or
mmseg configs whose own ``mmdet::``/``mmseg::`` bases already carry the right scope, so no
``_scope_='mmext'`` is stamped on their dicts (mmdet's detectors are not in mmext's registry).

Version guard: both steps touch mmengine internals and are applied on mmengine 0.10.x only, the
series they were written and tested against (setup.py requires ``mmengine>=0.10,<0.11``), and only
when ``Config._get_cfg_path`` still takes ``(cfg_path, filename)``. Otherwise nothing is patched and
a warning says that ``mmext::`` bases may not resolve. ``MMEXT_NO_PATCH=1`` (see
:mod:`mmext.compat`) turns this off with mmext's other mmengine patches; configs can then still
be given by path (:func:`config_path`).

What a user needs: mmengine learns the name when ``mmext`` is imported, so the process that reads
the config must ``import mmext`` before ``Config.fromfile``. ``custom_imports`` in the same config
comes too late: mmengine resolves ``_base_`` before it runs ``custom_imports``. mmext's
``tools/train.py`` and ``tools/test.py`` import mmext first; a script of one's own (or another
tool) needs ``import mmext`` at its top.
"""
import inspect
import os
import os.path as osp
import warnings

from mmext.errors import ConfigError

#: The scheme prefix of mmext's configs in ``_base_`` (``'mmext::mask_rcnn/...py'``).
SCHEME = 'mmext::'

#: What setup.py copies into ``mmext/.mim`` when it builds a wheel or an sdist install.
MIM_CONTENTS = ('configs', 'tools', 'model-index.yml')

_SUPPORTED_MMENGINE = ((0, 10), (0, 11))  # [low, high)


def package_dir():
    """The directory of the imported ``mmext`` package."""
    return osp.dirname(osp.abspath(__file__))


def checkout_root():
    """The repository root when mmext runs from a git checkout (editable or on ``sys.path``), else None.

    A checkout is recognised by ``setup.py`` and ``configs/`` next to the ``mmext`` package; an
    installed package's parent (``site-packages``) has neither.
    """
    root = osp.dirname(package_dir())
    if osp.isfile(osp.join(root, 'setup.py')) and osp.isdir(osp.join(root, 'configs')):
        return root
    return None


def mim_dir():
    """``mmext/.mim`` of an installed wheel, when it holds the configs, else None."""
    path = osp.join(package_dir(), '.mim')
    return path if osp.isdir(osp.join(path, 'configs')) else None


def resource_root():
    """The directory holding ``configs/``, ``tools/`` and ``model-index.yml``: the checkout, else ``.mim``.

    Raises:
        ConfigError: neither layout is there (a broken install).
    """
    root = checkout_root() or mim_dir()
    if root is None:
        raise ConfigError(
            f'mmext cannot find its configs: neither a checkout (configs/ next to '
            f'{package_dir()}) nor an installed copy ({osp.join(package_dir(), ".mim", "configs")}). '
            f'Reinstall mmext with `pip install .` from a checkout, or from a wheel.')
    return root


def config_root():
    """The absolute path of mmext's ``configs`` directory (checkout or installed)."""
    return osp.join(resource_root(), 'configs')


def model_index_path():
    """The absolute path of mmext's ``model-index.yml`` (checkout or installed)."""
    return osp.join(resource_root(), 'model-index.yml')


def list_configs():
    """Every experiment config (not under ``_base_``), as ``'<folder>/<file>.py'``, sorted."""
    root = config_root()
    names = []
    for folder in sorted(os.listdir(root)):
        if folder.startswith(('_', '.')) or not osp.isdir(osp.join(root, folder)):
            continue
        names += [f'{folder}/{f}' for f in sorted(os.listdir(osp.join(root, folder)))
                  if f.endswith('.py')]
    return names


def config_path(name):
    """The absolute path of one of mmext's configs, in a checkout or an installed wheel.

    Args:
        name (str): relative to ``configs/``, with or without the ``mmext::`` or ``configs/``
            prefix: ``'mask_rcnn/shvit_s4_fpn_1x_coco.py'``,
            ``'mmext::mask_rcnn/shvit_s4_fpn_1x_coco.py'``,
            ``'configs/mask_rcnn/shvit_s4_fpn_1x_coco.py'`` (``_base_/...`` files too).

    Raises:
        ConfigError: mmext has no such config (the message names where it looked and the folders).
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f'config name must be a non-empty string, got {name!r}')
    rel = name[len(SCHEME):] if name.startswith(SCHEME) else name
    rel = rel.replace('\\', '/').lstrip('/')
    if rel.startswith('configs/'):
        rel = rel[len('configs/'):]
    root = config_root()
    path = osp.normpath(osp.join(root, rel))
    if not path.startswith(root + os.sep) or not osp.isfile(path):
        folders = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        raise ConfigError(
            f'mmext has no config {name!r} (looked for {path}). Configs are named '
            f'"<folder>/<file>.py" relative to {root}, folders: {", ".join(folders)}; '
            f'e.g. "mmext::mask_rcnn/shvit_s4_fpn_1x_coco.py".')
    return path


def _mmengine_version():
    import mmengine
    from mmengine.utils import digit_version
    return tuple(digit_version(mmengine.__version__)[:2])


def _resolve_cfg_path(original):
    """``Config._get_cfg_path`` that resolves ``mmext::`` itself and leaves the rest to ``original``."""

    external = {}

    def _get_cfg_path(cfg_path, filename):
        if isinstance(cfg_path, str) and cfg_path.startswith(SCHEME):
            # scope None: read as the file itself (see the module docstring).
            return config_path(cfg_path), None
        if isinstance(cfg_path, str) and '::' in cfg_path:
            # Another package's config (``mmdet::...``): mmengine parses that package's whole
            # model index (about 100 metafiles for mmdet, ~0.2 s) on every call, and the answer
            # depends on the name alone: looked up once per process.
            if cfg_path not in external:
                external[cfg_path] = original(cfg_path, filename)
            return external[cfg_path]
        return original(cfg_path, filename)

    _get_cfg_path.__wrapped__ = original
    _get_cfg_path._mmext_scheme = True
    return _get_cfg_path


def register_config_package():
    """Make ``_base_ = 'mmext::<folder>/<file>.py'`` resolve (see the module docstring).

    Idempotent. Returns True when mmengine was patched (or already was), False when the installed
    mmengine is outside the supported 0.10.x series and nothing was touched.
    """
    from mmext.compat import patching_disabled
    if patching_disabled():
        return False
    import mmengine
    from mmengine.config import Config
    from mmengine.config import utils as config_utils
    low, high = _SUPPORTED_MMENGINE
    get_cfg_path = getattr(Config, '_get_cfg_path', None)
    fits = (low <= _mmengine_version() < high and get_cfg_path is not None
            and isinstance(getattr(config_utils, 'MODULE2PACKAGE', None), dict)
            and list(inspect.signature(get_cfg_path).parameters) == ['cfg_path', 'filename'])
    if not fits:
        warnings.warn(
            f'mmext: mmengine {mmengine.__version__} is not the 0.10.x series whose config '
            f'loader mmext extends; `_base_ = "mmext::..."` may not resolve. Give the config\'s '
            f'path instead (mmext.resources.config_path returns it).', stacklevel=2)
        return False
    config_utils.MODULE2PACKAGE.setdefault('mmext', 'mmext')
    if not getattr(Config._get_cfg_path, '_mmext_scheme', False):
        Config._get_cfg_path = staticmethod(_resolve_cfg_path(Config._get_cfg_path))
    return True
