"""Configs: loading one (with ``--cfg-options``), telling mmdet from mmseg, registering that
library's modules, and the work dir a run writes to."""
import copy
import os.path as osp

from mmengine.config import Config

from mmext.compat import cached_config_metainfo
from mmext.engine.cfg_options import check_cfg_options
from mmext.errors import ConfigError, MmextError

CODEBASES = ('mmdet', 'mmseg')

# Model types that tell a config's codebase when ``default_scope`` is missing.
_SEG_MODEL_TYPES = ('EncoderDecoder', 'CascadeEncoderDecoder', 'SegTTAModel')


# --------------------------------------------------------------------------------------- config
def load_config(config, cfg_options=None, check_options=True):
    """An mmengine ``Config`` from a path (or a Config), with ``cfg_options`` merged in.

    ``config`` may also name one of mmext's configs as ``mmext::mask_rcnn/shvit_s4_fpn_1x_coco.py``.
    ``cfg_options`` keys are checked first (:mod:`mmext.engine.cfg_options`): a key that is not
    in the config and may not be added raises :class:`ConfigError` naming the closest key.
    A config file that does not parse, or whose ``_base_`` is missing, is a ConfigError too.
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        config = str(config)
        if config.startswith('mmext::'):  # one of mmext's configs, from a checkout or a wheel
            from mmext.resources import config_path
            config = config_path(config)
        if not osp.isfile(config):
            raise ConfigError(f'config file {config!r} does not exist (run from the repository '
                              'root, or pass the path of a file under configs/).')
        if not config.endswith(('.py', '.yml', '.yaml', '.json')):
            raise ConfigError(f'{config!r} is not a config file: mmengine reads .py, .yml, '
                              '.yaml and .json configs.')
        try:
            with cached_config_metainfo():
                cfg = Config.fromfile(config)
        except (SyntaxError, FileNotFoundError, KeyError, NameError, ImportError) as exc:
            raise ConfigError(f'cannot load config {config!r}: {type(exc).__name__}: '
                              f'{exc}') from exc
    if cfg_options:
        if check_options:
            try:
                codebase = detect_codebase(cfg)
                register_codebase(codebase)
            except ConfigError:
                codebase = None
            check_cfg_options(cfg, cfg_options, codebase)
        try:
            cfg.merge_from_dict(dict(cfg_options))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f'cannot apply --cfg-options {dict(cfg_options)}: {exc}') from exc
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


def build_config_model(config, cfg_options=None):
    """``(model, codebase, cfg)``: the config's model, built through mmdet's or mmseg's registry.

    The backbone's pretrained weights are not loaded (``init_weights`` is not called).
    """
    cfg = load_config(config, cfg_options)
    codebase = detect_codebase(cfg)
    try:
        register_codebase(codebase)
    except ImportError as exc:
        raise MmextError(f'{codebase} is needed to build this config ({exc}); install it from '
                         'requirements/runtime.txt.') from None
    if codebase == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    from mmengine.registry import DefaultScope
    model_cfg = cfg.model
    if codebase == 'mmseg' and cfg.get('test_cfg') and 'test_cfg' not in model_cfg:
        model_cfg.test_cfg = cfg.test_cfg
    with DefaultScope.overwrite_default_scope(codebase):  # whatever scope the caller had
        model = MODELS.build(model_cfg)
    return model.eval(), codebase, cfg
