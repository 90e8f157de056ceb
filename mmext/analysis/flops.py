"""Parameters and multiply-accumulates (GMACs) of a backbone or of a detector/segmentor config.

MACs come from :func:`mmext.analysis.count_macs` (convolutions, linear layers, matrix products and
scaled-dot-product attention; norms left out, the papers' convention), on one zero image.

* :func:`backbone_complexity` -- an mmext backbone by ``type`` and ``arch`` (no mmdet/mmseg).
* :func:`config_complexity` -- the model of an mmdet or mmseg config, built through that library's
  registry. ``part`` picks what the input goes through:

  - ``'backbone'``: the backbone only;
  - ``'backbone+neck'`` (default): ``model.extract_feat`` (backbone and neck, the part whose cost
    does not depend on the image's content);
  - ``'model'``: the whole network as ``model._forward`` runs it (heads included). For two-stage
    detectors the RoI head's share depends on how many proposals survive, so it is a figure for
    the zero image only.

Default input sizes: 224x224 for backbones, 800x1280 (mmdet's ``get_flops`` default, H x W) for
mmdet configs, 512x512 for mmseg configs.
"""
import torch

from mmext.analysis.complexity import count_macs, count_params
from mmext.errors import ConfigError, MmextError

PARTS = ('backbone', 'backbone+neck', 'model')
DEFAULT_SIZES = {'backbone': (224, 224), 'mmdet': (800, 1280), 'mmseg': (512, 512)}


def _size(input_size, default):
    if input_size is None:
        return tuple(default)
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f'input size must be H W (or one number), not {input_size!r}')
    return size


def _result(name, params, macs, size, **extra):
    return dict(model=name, input_shape=[1, 3, size[0], size[1]], params=int(params),
                macs=int(macs), mparams=round(params / 1e6, 3), gmacs=round(macs / 1e9, 3),
                **extra)


def backbone_complexity(type='SHViT', arch='s4', input_size=None, out_indices=None,
                        count_norms=False, deploy=False):
    """Params and MACs of an mmext backbone (all stages unless ``out_indices`` says otherwise).

    Returns:
        dict: ``model``, ``input_shape``, ``params``, ``macs``, ``mparams``, ``gmacs``.
    """
    from mmext.deploy.build import build_backbone
    size = _size(input_size, DEFAULT_SIZES['backbone'])
    model = build_backbone(type, arch, out_indices=out_indices, deploy=deploy)
    macs = count_macs(model, (1, 3) + size, count_norms=count_norms)
    return _result(f'{type}-{arch}', count_params(model), macs, size, part='backbone')


class _Part(torch.nn.Module):
    """The chosen part of a detector/segmentor as a module of one image tensor."""

    def __init__(self, model, part, codebase):
        super().__init__()
        self.model = model
        self.part = part
        self.codebase = codebase

    def forward(self, x):
        if self.part == 'backbone':
            return self.model.backbone(x)
        if self.part == 'backbone+neck':
            return self.model.extract_feat(x)
        if self.codebase == 'mmseg':
            return self.model._forward(x)
        return self.model._forward(x, _det_samples(x))


def _det_samples(x):
    """Data samples with the image metadata mmdet's heads read in ``_forward``."""
    from mmdet.structures import DetDataSample
    n, _, h, w = x.shape
    h, w = int(h), int(w)
    samples = []
    for _ in range(n):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                 batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        samples.append(sample)
    return samples


def build_config_model(config, cfg_options=None):
    """``(model, codebase, cfg)``: the config's model, built through mmdet's or mmseg's registry.

    The backbone's pretrained weights are not loaded (``init_weights`` is not called).
    """
    from mmext.engine.config import detect_codebase, load_config, register_codebase
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


def config_complexity(config, input_size=None, part='backbone+neck', cfg_options=None,
                      count_norms=False):
    """Params and MACs of a config's model (see the module docstring for ``part``).

    Returns:
        dict: as :func:`backbone_complexity`, plus ``codebase``, ``part`` and the backbone's and
        whole model's parameter counts (``backbone_params``, ``model_params``).
    """
    if part not in PARTS:
        raise ConfigError(f'part must be one of {", ".join(PARTS)}, not {part!r}')
    model, codebase, cfg = build_config_model(config, cfg_options)
    size = _size(input_size, DEFAULT_SIZES[codebase])
    wrapped = _Part(model, part, codebase)
    if part == 'backbone':
        counted = model.backbone
    elif part == 'backbone+neck':
        counted = torch.nn.ModuleList([model.backbone] +
                                      ([model.neck] if getattr(model, 'neck', None) else []))
    else:
        counted = model
    try:
        macs = count_macs(wrapped, (1, 3) + size, count_norms=count_norms)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if part == 'model':
            raise MmextError(f'could not trace the whole model of {config} ({type(exc).__name__}:'
                             f' {exc}); count part="backbone+neck" instead.') from exc
        raise
    backbone = cfg.model.get('backbone', {})
    name = (f'{str(cfg.model.get("type")).split(".")[-1]}'
            f'({str(backbone.get("type")).split(".")[-1]}-{backbone.get("arch", "")})')
    return _result(name, count_params(counted), macs, size, part=part, codebase=codebase,
                   backbone_params=count_params(model.backbone),
                   model_params=count_params(model), config=str(config))


def get_flops(config=None, type=None, arch=None, input_size=None, part='backbone+neck',
              cfg_options=None, count_norms=False):
    """:func:`config_complexity` for a config, else :func:`backbone_complexity`."""
    if config is not None:
        return config_complexity(config, input_size, part, cfg_options, count_norms)
    if not type or not arch:
        raise ConfigError('give a config file, or a backbone type and arch (e.g. SHViT s4).')
    return backbone_complexity(type, arch, input_size, count_norms=count_norms)


def format_complexity(result):
    """One readable block of a result."""
    shape = 'x'.join(str(s) for s in result['input_shape'][2:])
    lines = [f'model:  {result["model"]}' + (f' [{result["part"]}]' if 'part' in result else ''),
             f'input:  {shape}',
             f'GMACs:  {result["gmacs"]:.3f}',
             f'params: {result["mparams"]:.3f} M']
    if 'model_params' in result:
        lines.append(f'        (backbone {result["backbone_params"] / 1e6:.3f} M, whole model '
                     f'{result["model_params"] / 1e6:.3f} M)')
    return '\n'.join(lines)
