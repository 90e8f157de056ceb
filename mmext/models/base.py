"""What every mmext backbone shares: the backbone contract.

:class:`BaseBackbone` gives each family the same behaviour for the arguments detection and
segmentation configs pass: ``arch`` (a name from the family's ``arch_settings`` table or a dict,
validated strictly), ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``, ``deploy``,
``init_cfg`` (ImageNet-pretrained weights through :func:`mmext.checkpoints.load_pretrained`) and
:meth:`switch_to_deploy`; it checks every input and keeps fused and unfused checkpoints apart.

A family defines ``arch_settings``, ``arch_keys`` (the keys a custom arch dict needs),
``arch_defaults`` (the optional keys and their defaults), ``stage_keys`` (keys holding one entry
per stage), :meth:`check_arch` (its own rules) and ``min_input_size``; in its ``__init__`` it
builds ``self.stem`` (frozen with stage 0) and ``self.stages`` (an ``nn.ModuleList`` of
:class:`BaseStage`, each with its own ``forward``), then calls :meth:`finish_init`.
"""
import difflib
import functools
import inspect
import numbers

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmext.compat import is_compiling
from mmext.errors import CheckpointError, ConfigError, FusedCheckpointError
from mmext.models.attention import check_attn_impl


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class BaseStage(nn.Module):
    """A stage of a backbone; :meth:`run_blocks` checkpoints each block when ``with_cp`` is set
    (the backbone sets ``with_cp`` on all its stages)."""

    with_cp = False

    def run_blocks(self, blocks, x):
        """Run ``blocks`` in order; with ``with_cp`` (training, gradients needed) each block is
        recomputed in the backward pass instead of keeping its activations."""
        if self.with_cp and self.training and x.requires_grad:
            for block in blocks:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        for block in blocks:
            x = block(x)
        return x


class BaseBackbone(BaseModule):
    """Base class of mmext backbones.

    Args:
        arch (str | dict): a key of ``arch_settings`` (case-insensitive) or a dict with every
            key of ``arch_keys`` and any of ``arch_defaults`` (nothing else).
        num_stages (int): number of output levels of the family.
        out_indices (int | Sequence[int]): which stages' outputs to return (negative values count
            from the end). Outputs are returned in increasing index order. Stages after the last
            one are built (ImageNet checkpoints hold them, so loading stays exact) but never run,
            and their parameters take no gradient: DistributedDataParallel needs no
            ``find_unused_parameters`` (SHViT's RTMDet/YOLOX configs take stages 0-1 of 3).
        frozen_stages (int): ``-1`` freezes nothing; ``i >= 0`` freezes the stem and stages
            ``0..i`` (no gradients, eval mode).
        norm_eval (bool): keep every BatchNorm (SyncBatchNorm included) in eval mode while training.
        with_cp (bool): activation checkpointing of each block (``use_reentrant=False``).
        attn_impl (str): ``'auto'`` (SDPA on CUDA, the explicit formula elsewhere), ``'sdpa'`` or
            ``'explicit'``, handed to every attention of the family by :meth:`finish_init`.
        deploy (bool): build the fused structure of :meth:`switch_to_deploy` directly (to load a
            checkpoint saved after ``switch_to_deploy()``).
        init_cfg (dict | list | None): ``dict(type='Pretrained', checkpoint=PATH)`` loads
            ImageNet weights in any layout the family knows (see :mod:`mmext.checkpoints`); with
            ``deploy=True`` they are loaded unfused, then folded.
    """

    arch_settings = {}
    arch_keys = ()
    arch_defaults = {}
    stage_keys = ()
    default_num_stages = 4
    min_input_size = 1
    #: names of submodules (a fragment of their dotted name, e.g. ``'pos_embed'``) that static
    #: int8 exports keep in float (:func:`mmext.deploy.quantize.quantize_onnx`): layers whose
    #: int8 rounding costs more accuracy than the rest
    int8_float_layers = ()

    def __init_subclass__(cls, **kwargs):
        """Record the arguments of the outermost constructor call (to build the other structure,
        fused or unfused, of the same model when a checkpoint needs it)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if '_build_args' not in self.__dict__:
                bound = inspect.signature(init).bind(self, *args, **kw)
                self.__dict__['_build_args'] = (type(self), {
                    k: v for k, v in bound.arguments.items() if k != 'self'})
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def __init__(self, arch, num_stages, out_indices, frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, attn_impl='auto'):
        super().__init__(init_cfg=init_cfg)
        check_attn_impl(attn_impl, type(self).__name__)
        self._attn_impl = attn_impl
        self.num_stages = num_stages
        self.arch_name, self.arch = self.parse_arch(arch)
        self.out_indices = self.check_out_indices(out_indices, num_stages)
        if not _is_int(frozen_stages) or not -1 <= frozen_stages < num_stages:
            raise ConfigError(
                f'{type(self).__name__}: frozen_stages={frozen_stages!r} is invalid; use the int '
                f'-1 (train everything) or a stage index 0..{num_stages - 1} (freezes the stem '
                f'and the stages up to it).')
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        self._with_cp = bool(with_cp)
        self.deploy = False

    def finish_init(self, deploy=False):
        """End of a family's ``__init__``: hand ``with_cp`` to the stages and ``attn_impl`` to every
        attention (each module with an ``attn_impl`` attribute), freeze, and fold when ``deploy``."""
        self.with_cp = self._with_cp
        for module in self.modules():
            if module is not self and hasattr(module, 'attn_impl'):
                module.attn_impl = self._attn_impl
        self._freeze_stages()
        if deploy:
            self.switch_to_deploy()

    @property
    def with_cp(self):
        return self._with_cp

    @with_cp.setter
    def with_cp(self, value):
        self._with_cp = bool(value)
        for module in self.modules():
            if isinstance(module, BaseStage):
                module.with_cp = self._with_cp

    # ----------------------------------------------------------------- argument checks
    @classmethod
    def parse_arch(cls, arch):
        """Return ``(name, settings)`` for an arch name or a custom settings dict (validated)."""
        name = cls.__name__
        allowed = list(cls.arch_keys) + list(cls.arch_defaults)
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ConfigError(
                    f"Unknown {name} arch '{arch}'. Choose one of "
                    f'{sorted(cls.arch_settings)} or pass a dict with keys {list(cls.arch_keys)}.')
            return key, cls.check_arch(dict(cls.arch_defaults, **cls.arch_settings[key]))
        if not isinstance(arch, dict):
            raise ConfigError(f'{name} arch must be a name or a dict, not {type(arch).__name__}.')
        missing = [k for k in cls.arch_keys if k not in arch]
        if missing:
            raise ConfigError(
                f'A custom {name} arch dict needs the keys {list(cls.arch_keys)}; '
                f'{missing} are missing.')
        for key in arch:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f" Did you mean '{close[0]}'?" if close else ''
                raise ConfigError(
                    f'{name} arch has the unknown key {key!r}.{hint} Allowed keys: required '
                    f'{list(cls.arch_keys)}, optional {list(cls.arch_defaults)}.')
        return 'custom', cls.check_arch(dict(cls.arch_defaults, **arch))

    @classmethod
    def check_arch(cls, arch):
        """Check the per-stage lists (one entry per stage, positive ints for ``embed_dims`` and
        ``depths``); families add their own rules. Returns ``arch``."""
        num = cls.default_num_stages
        for key in cls.stage_keys:
            value = arch[key]
            if not isinstance(value, (list, tuple)) or len(value) != num:
                raise ConfigError(
                    f'{cls.__name__} arch: {key} needs {num} entries (one per stage), got '
                    f'{value!r}; ' + ', '.join(f'{k}={arch[k]!r}' for k in cls.stage_keys) + '.')
        for key in ('embed_dims', 'depths'):
            if key in arch and not all(_is_int(v) and v > 0 for v in arch[key]):
                raise ConfigError(f'{cls.__name__} arch: {key}={arch[key]!r} must be positive '
                                  f'ints.')
        return arch

    @classmethod
    def check_out_indices(cls, out_indices, num_stages):
        """Normalise ``out_indices`` to a sorted tuple of distinct stage indices (ints only)."""
        if _is_int(out_indices):
            out_indices = (out_indices, )
        ok = isinstance(out_indices, (list, tuple)) and len(out_indices) > 0 and all(
            _is_int(i) and -num_stages <= i < num_stages for i in out_indices)
        if not ok:
            raise ConfigError(
                f'{cls.__name__}: out_indices={out_indices!r} is invalid; it has {num_stages} '
                f'stages, so give a non-empty list or tuple of ints in 0..{num_stages - 1} '
                f'(or negative ones counting from the end).')
        normalised = sorted({int(i) % num_stages for i in out_indices})
        if len(normalised) != len(out_indices):
            raise ConfigError(f'{cls.__name__}: out_indices={out_indices!r} repeats a stage.')
        return tuple(normalised)

    def check_input(self, x):
        """Refuse what the backbone cannot take: not ``(N, 3, H, W)`` or smaller than
        ``min_input_size``. Python-int checks only, skipped while tracing (ONNX export)."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f'{name} takes a 4-D (N, 3, H, W) image batch, got {shape}.')
        if torch.jit.is_tracing() or is_compiling():
            return
        _, c, h, w = x.shape
        if c != 3:
            raise ConfigError(f'{name} takes 3-channel images, got {c} channels '
                              f'(input {tuple(x.shape)}).')
        if h < self.min_input_size or w < self.min_input_size:
            raise ConfigError(f'{name} needs inputs of at least {self.min_input_size}x'
                              f'{self.min_input_size} pixels, got {h}x{w}.')

    # ----------------------------------------------------------------- running stages
    def forward(self, x):
        """``(N, 3, H, W)`` -> tuple of the ``out_indices`` stages' maps, finest first.

        A batch of 0 images gives 0-sized maps of the usual shapes.
        """
        self.check_input(x)
        return self.forward_stages(self.stem(x))

    def forward_stages(self, x, start=0, outs=()):
        """Run stages ``start..`` on ``x``, collecting the ``out_indices`` outputs after
        ``outs``; stops after the last stage asked for."""
        outs = list(outs)
        for i in range(start, self.out_indices[-1] + 1):
            x = self.stages[i](x)
            if i in self.out_indices:
                outs.append(self.forward_output(i, x))
        return tuple(outs)

    def forward_output(self, index, x):
        """What stage ``index`` returns for its map ``x`` (families may add a norm)."""
        return x

    # ----------------------------------------------------------------- training behaviour
    def _freeze_stages(self):
        for stage in self.stages[self.out_indices[-1] + 1:]:  # never run: no gradient
            for param in stage.parameters():
                param.requires_grad = False
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.stages[:self.frozen_stages + 1]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ----------------------------------------------------------------- weights
    def build_twin(self, deploy, device=None):
        """The same backbone (same arguments) with the other structure: fused if ``deploy``."""
        cls, kwargs = self._build_args
        kwargs = dict(kwargs, deploy=deploy, init_cfg=None)
        if device is None:
            return cls(**kwargs)
        with torch.device(device):
            return cls(**kwargs)

    def init_weights(self):
        """mmengine's initialisation, or, when ``init_cfg`` (a dict or a list) has a
        ``Pretrained`` entry, mmext's loader for it (any layout; other entries run first)."""
        from mmext.checkpoints import init_pretrained, pretrained_entry
        if pretrained_entry(self.init_cfg) is None:
            super().init_weights()
            return
        init_pretrained(self, self.init_cfg)  # unfused ImageNet weights fold on the way in
        self._is_init = True

    def switch_to_deploy(self):
        """Fold every BatchNorm into its neighbouring conv/linear, in place, for inference.

        Children fold before their parents, so a parent may rely on its children being fused.
        """
        for module in reversed(list(self.modules())):
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
        self.deploy = True
        return self

    def _structure_keys(self):
        """``(keys only this structure has, keys only the other structure has)``."""
        cached = self.__dict__.get('_structure_keys_cache')
        if cached is None or cached[0] != self.deploy:
            own = set(self.state_dict())
            try:
                other = set(self.build_twin(not self.deploy, device='meta').state_dict())
            except TypeError:  # a user subclass whose constructor takes no ``deploy``: no check
                other = own
            cached = (self.deploy, own - other, other - own)
            self.__dict__['_structure_keys_cache'] = cached
        return cached[1], cached[2]

    def adapt_state_dict(self, state_dict, prefix=''):
        """The one place fused and unfused weights meet (``load_state_dict``, mmengine's
        ``load_checkpoint`` and :func:`mmext.checkpoints.load_pretrained` all come here).

        ``state_dict``'s keys under ``prefix`` are this backbone's. Unfused weights offered to a
        fused (``deploy=True``) model are loaded into an unfused twin and folded, in place of
        ``state_dict``'s entries; fused weights offered to an unfused model are refused with
        :class:`FusedCheckpointError` (a BatchNorm cannot be unfolded); weights of this structure
        pass unchanged. Returns ``state_dict``.
        """
        keys = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
        if keys and '_build_args' in self.__dict__ and self._other_structure(keys):
            self._adapt_structure(state_dict, prefix, keys)
        return state_dict

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.adapt_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _other_structure(self, keys):
        """Whether checkpoint ``keys`` come from the other structure (fused vs unfused): they hold
        no key that only this structure has, yet cover a module where this structure has such a
        key (e.g. ``X.conv.weight`` without ``X.bn.*``). Works on filtered key sets too."""
        only_own, only_other = self._structure_keys()
        if keys & only_own:
            return False
        if keys & only_other:
            return True
        covered = set()
        for key in keys:
            parts = key.split('.')
            covered.update('.'.join(parts[:i]) for i in range(1, len(parts)))
        return any(k.rsplit('.', 2)[0] in covered for k in only_own)

    def _adapt_structure(self, state_dict, prefix, keys):
        name = f'{type(self).__name__}-{self.arch_name}'
        if not self.deploy:
            raise FusedCheckpointError(
                f'This checkpoint holds a fused {name} (saved after switch_to_deploy(): no '
                f'BatchNorms), but the model is unfused. Build the backbone with deploy=True to '
                f'load it, or load the unfused checkpoint saved before switch_to_deploy().')
        twin = self.build_twin(deploy=False)
        expected = {k for k in twin.state_dict() if not k.endswith('num_batches_tracked')}
        absent = sorted(expected - keys)
        if absent:
            raise CheckpointError(
                f'This checkpoint holds an unfused {name} but lacks {len(absent)} of its '
                f'tensors (e.g. {absent[:3]}), so it cannot be folded for this deploy=True '
                f'model. Load the complete checkpoint, or build the model with deploy=False.')
        twin.load_state_dict({k: state_dict[prefix + k] for k in keys})
        for key in keys:
            del state_dict[prefix + key]
        for key, value in twin.switch_to_deploy().state_dict().items():
            state_dict[prefix + key] = value
