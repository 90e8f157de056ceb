"""mmext's model registry, and its wiring into mmdet's and mmseg's registries.

The backbones and necks register into :data:`MODELS`, an mmengine registry with scope ``mmext``
whose parent is mmengine's root ``MODELS``; this needs only torch and mmengine. Because the root
knows the ``mmext`` scope, ``type='mmext.SHViT'`` resolves from any downstream registry.
:func:`register_all` also puts every module straight into mmdet's and mmseg's ``MODELS`` (when those
libraries are installed) so that the plain ``type='SHViT'`` builds from their configs as well,
and makes mmengine's config loader accept ``_base_ = 'mmext::<folder>/<file>.py'``
(:func:`mmext.resources.register_config_package`, version-guarded and documented there).
"""
import importlib

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmext', locations=['mmext.models'])

DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')


def register_all():
    """Import mmext's models and register them in every installed downstream ``MODELS``.

    Returns:
        list[str]: the downstream packages the modules were registered into.
    """
    importlib.import_module('mmext.models')
    importlib.import_module('mmext.engine.hooks')  # RNGStateHook into mmengine's HOOKS
    from mmext.resources import register_config_package
    register_config_package()
    done = []
    for module_name in DOWNSTREAM_REGISTRIES:
        try:
            downstream = importlib.import_module(module_name).MODELS
        except (ImportError, AssertionError):  # not installed, or its mmcv check failed
            continue
        for name, cls in MODELS.module_dict.items():
            # A name the downstream library already uses for its own module stays theirs;
            # ours is still reachable as 'mmext.<name>'.
            if name not in downstream.module_dict:
                downstream.register_module(name=name, module=cls)
        done.append(module_name.split('.')[0])
    return done
