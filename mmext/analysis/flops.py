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

Size limit: counting runs one traced forward pass, so an input whose activations cannot fit in
memory is refused before anything is built (:func:`check_input_size`). The estimate is
:data:`BYTES_PER_PIXEL` per input pixel plus :data:`BYTES_PER_TOKEN_PAIR` per pair of stride-16
tokens (the global attentions grow with the square of the image area), compared with the memory
the system says is available (``MemAvailable``). Both constants are the largest peaks measured here
(backbones and configs at 1024x1024 and 2048x2048), rounded up. An allocation that fails anyway
becomes one error line too.
"""
import torch

from mmext.benchmark.complexity import count_macs, count_params
from mmext.engine.config import build_config_model  # noqa: F401  (was defined here)
from mmext.errors import ConfigError, MmextError
from mmext.utils import error_line

PARTS = ('backbone', 'backbone+neck', 'model')
DEFAULT_SIZES = {'backbone': (224, 224), 'mmdet': (800, 1280), 'mmseg': (512, 512)}
BYTES_PER_PIXEL = 1500
BYTES_PER_TOKEN_PAIR = 16


def _size(input_size, default):
    if input_size is None:
        return tuple(default)
    if isinstance(input_size, int):
        input_size = (input_size, )
    try:
        size = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f'input size must be H W (or one number), both positive, not '
                          f'{input_size!r}')
    return size


def available_memory():
    """Bytes of memory available to a new allocation (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def estimate_memory(h, w):
    """Estimated peak bytes of counting at ``h x w`` (see the module docstring)."""
    tokens16 = -(-h // 16) * -(-w // 16)
    return BYTES_PER_PIXEL * h * w + BYTES_PER_TOKEN_PAIR * tokens16 ** 2


def check_input_size(size):
    """Raise :class:`ConfigError` for an input whose forward pass cannot fit in memory here."""
    h, w = size
    need, available = estimate_memory(h, w), available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f'input {h}x{w} is too large to count on this machine: the traced forward pass needs '
            f'about {need / 1e9:,.1f} GB ({BYTES_PER_PIXEL} bytes per pixel plus '
            f'{BYTES_PER_TOKEN_PAIR} per pair of stride-16 tokens for global attention) and '
            f'{available / 1e9:.1f} GB is available; count at a smaller --shape (convolution '
            'MACs grow in proportion to H*W).')
    return size


def _count(model, size, count_norms):
    """:func:`count_macs` at ``size``; running out of memory becomes a :class:`MmextError`."""
    try:
        return count_macs(model, (1, 3) + tuple(size), count_norms=count_norms)
    except (MemoryError, RuntimeError) as exc:
        oom = isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or \
            isinstance(exc, getattr(torch, 'OutOfMemoryError', ()))
        if not oom:
            raise
        raise MmextError(f'ran out of memory counting at {size[0]}x{size[1]} '
                         f'({error_line(exc, 200)}); count at a smaller --shape.') from None


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
    size = check_input_size(_size(input_size, DEFAULT_SIZES['backbone']))
    model = build_backbone(type, arch, out_indices=out_indices, deploy=deploy)
    macs = _count(model, size, count_norms)
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


def config_complexity(config, input_size=None, part='backbone+neck', cfg_options=None,
                      count_norms=False):
    """Params and MACs of a config's model (see the module docstring for ``part``).

    Returns:
        dict: as :func:`backbone_complexity`, plus ``codebase``, ``part`` and the backbone's and
        whole model's parameter counts (``backbone_params``, ``model_params``).
    """
    if part not in PARTS:
        raise ConfigError(f'part must be one of {", ".join(PARTS)}, not {part!r}')
    if input_size is not None:
        check_input_size(_size(input_size, None))
    model, codebase, cfg = build_config_model(config, cfg_options)
    size = check_input_size(_size(input_size, DEFAULT_SIZES[codebase]))
    wrapped = _Part(model, part, codebase)
    if part == 'backbone':
        counted = model.backbone
    elif part == 'backbone+neck':
        counted = torch.nn.ModuleList([model.backbone] +
                                      ([model.neck] if getattr(model, 'neck', None) else []))
    else:
        counted = model
    try:
        macs = _count(wrapped, size, count_norms)
    except (KeyboardInterrupt, SystemExit, MmextError):
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


def get_flops(config=None, type=None, arch=None, input_size=None, part=None,
              cfg_options=None, count_norms=False):
    """:func:`config_complexity` for a config (``part`` defaults to ``'backbone+neck'``), else
    :func:`backbone_complexity` (where ``part`` can only be ``'backbone'``)."""
    if config is not None:
        if type or arch:
            raise ConfigError('give a config file or a backbone type and arch, not both.')
        return config_complexity(config, input_size, part or 'backbone+neck', cfg_options,
                                 count_norms)
    if not type or not arch:
        raise ConfigError('give a config file, or a backbone type and arch (e.g. SHViT s4).')
    if part not in (None, 'backbone'):
        raise ConfigError(f'part {part!r} needs a config (a backbone alone has no neck or '
                          'heads); give a config file or leave --part out.')
    if cfg_options:
        raise ConfigError('--cfg-options needs a config file; a backbone alone has no config.')
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
