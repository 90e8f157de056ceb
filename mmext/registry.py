"""mmext's model registry, and its wiring into mmdet's and mmseg's registries.

The backbones and necks register into :data:`MODELS`, an mmengine registry with scope ``mmext``
whose parent is mmengine's root ``MODELS``; this needs only torch and mmengine. Because the root
knows the ``mmext`` scope, ``type='mmext.SHViT'`` resolves from any downstream registry.
:func:`register_all` also puts every module straight into mmdet's and mmseg's ``MODELS`` so that
the plain ``type='SHViT'`` builds from their configs as well: at once where those registries are
imported already, otherwise as soon as they are (an import hook; ``import mmext`` itself imports
neither library),
and makes mmengine's config loader accept ``_base_ = 'mmext::<folder>/<file>.py'``
(:func:`mmext.resources.register_config_package`, version-guarded and documented there).
"""
import importlib
import importlib.abc
import sys

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmext', locations=['mmext.models'])

DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')


def register_into(downstream):
    """Put every mmext module into the registry ``downstream`` (mmdet's or mmseg's ``MODELS``).

    A name the downstream library already uses for its own module stays theirs; ours is still
    reachable as ``'mmext.<name>'``.
    """
    for name, cls in MODELS.module_dict.items():
        if name not in downstream.module_dict:
            downstream.register_module(name=name, module=cls)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Registers mmext's modules into ``mmdet.registry``/``mmseg.registry`` right after the
    package imports them, so that ``import mmext`` need not import mmdet or mmseg (2 s)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in DOWNSTREAM_REGISTRIES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        registry = getattr(module, 'MODELS', None)
        if registry is not None:
            register_into(registry)

    def __getattr__(self, name):  # get_code, get_source, ... of the wrapped loader
        return getattr(self.loader, name)


_finder = _RegisterOnImport()


def register_all():
    """Import mmext's models and register them in mmdet's and mmseg's ``MODELS``: at once where
    those registries are imported already, otherwise when they are (see
    :class:`_RegisterOnImport`). Imports neither mmdet nor mmseg.

    Returns:
        list[str]: the downstream packages the modules were registered into now.
    """
    importlib.import_module('mmext.models')
    importlib.import_module('mmext.engine.hooks')  # RNGStateHook into mmengine's HOOKS
    from mmext.resources import register_config_package
    register_config_package()
    done = []
    for module_name in DOWNSTREAM_REGISTRIES:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, 'MODELS', None) is not None:
            register_into(module.MODELS)
            done.append(module_name.split('.')[0])
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return done
