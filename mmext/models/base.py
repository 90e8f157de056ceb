"""What every mmext backbone shares.

:class:`BaseBackbone` gives each family the same behaviour for the arguments detection and
segmentation configs pass: ``arch`` (a name from the family's ``arch_settings`` table or a dict),
``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``, ``init_cfg`` (ImageNet-pretrained
weights through :func:`mmext.checkpoints.load_pretrained`) and :meth:`switch_to_deploy`.

A family defines ``arch_settings``, ``arch_keys`` (the keys a custom arch dict needs) and, in its
``__init__``, ``self.stem`` (the first module, frozen with stage 0) and ``self.stages`` (an
``nn.ModuleList``, one entry per output level, each with ``downsample`` and ``blocks``). The
shared :meth:`BaseBackbone.forward` runs them; a family overrides :meth:`forward_stage` or
:meth:`forward_output` where its stages differ.
"""
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmext.errors import ConfigError


class BaseBackbone(BaseModule):
    """Base class of mmext backbones.

    Args:
        arch (str | dict): a key of ``arch_settings`` (case-insensitive) or a dict with ``arch_keys``.
        num_stages (int): number of output levels of the family.
        out_indices (int | Sequence[int]): which stages' outputs to return (negative values count
            from the end). Outputs are returned in increasing index order.
        frozen_stages (int): ``-1`` freezes nothing; ``i >= 0`` freezes the stem and stages
            ``0..i`` (no gradients, eval mode).
        norm_eval (bool): keep every BatchNorm (SyncBatchNorm included) in eval mode while training.
        with_cp (bool): activation checkpointing of each block (``use_reentrant=False``).
        init_cfg (dict | list | None): ``dict(type='Pretrained', checkpoint=PATH)`` loads
            ImageNet weights in any layout the family knows (see :mod:`mmext.checkpoints`).
    """

    arch_settings = {}
    arch_keys = ()

    def __init__(self, arch, num_stages, out_indices, frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.arch_name, self.arch = self.parse_arch(arch)
        self.num_stages = num_stages
        self.out_indices = self.check_out_indices(out_indices, num_stages)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < num_stages:
            raise ConfigError(
                f'{type(self).__name__}: frozen_stages={frozen_stages!r} is out of range; use -1 '
                f'(train everything) or a stage index 0..{num_stages - 1} (freezes the stem and '
                f'the stages up to it).')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = False

    # ----------------------------------------------------------------- argument checks
    @classmethod
    def parse_arch(cls, arch):
        """Return ``(name, settings)`` for an arch name or a custom settings dict."""
        name = cls.__name__
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ConfigError(
                    f"Unknown {name} arch '{arch}'. Choose one of "
                    f'{sorted(cls.arch_settings)} or pass a dict with keys {list(cls.arch_keys)}.')
            return key, dict(cls.arch_settings[key])
        if isinstance(arch, dict):
            missing = [k for k in cls.arch_keys if k not in arch]
            if missing:
                raise ConfigError(
                    f'A custom {name} arch dict needs the keys {list(cls.arch_keys)}; '
                    f'{missing} are missing.')
            return 'custom', dict(arch)
        raise ConfigError(f'{name} arch must be a name or a dict, not {type(arch).__name__}.')

    @classmethod
    def check_out_indices(cls, out_indices, num_stages):
        """Normalise ``out_indices`` to a sorted tuple of distinct stage indices."""
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        try:
            indices = [int(i) for i in out_indices]
        except (TypeError, ValueError):
            indices = None
        if not indices or any(not -num_stages <= i < num_stages for i in indices):
            raise ConfigError(
                f'{cls.__name__}: out_indices={out_indices!r} is invalid; it has {num_stages} '
                f'stages, so give a non-empty sequence of indices in 0..{num_stages - 1} '
                f'(or negative ones counting from the end).')
        normalised = sorted({i % num_stages for i in indices})
        if len(normalised) != len(indices):
            raise ConfigError(f'{cls.__name__}: out_indices={out_indices!r} repeats a stage.')
        return tuple(normalised)

    # ----------------------------------------------------------------- running stages
    def forward(self, x):
        """``(N, 3, H, W)`` -> tuple of the ``out_indices`` stages' maps, finest first."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.forward_stage(stage, x)
            if i in self.out_indices:
                outs.append(self.forward_output(i, x))
            if i == self.out_indices[-1]:
                break
        return tuple(outs)

    def forward_stage(self, stage, x):
        """One stage: its ``downsample`` then its ``blocks`` (checkpointed with ``with_cp``)."""
        return self.run_blocks(stage.blocks, stage.downsample(x))

    def forward_output(self, index, x):
        """What stage ``index`` returns for its map ``x`` (families may add a norm)."""
        return x

    def run_blocks(self, blocks, x):
        """Run a sequence of blocks, checkpointing each one when ``with_cp`` is set."""
        if self.with_cp and self.training and x.requires_grad:
            for block in blocks:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        return blocks(x) if isinstance(blocks, nn.Sequential) else _run_all(blocks, x)

    # ----------------------------------------------------------------- training behaviour
    def _freeze_stages(self):
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
    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from mmext.checkpoints import load_pretrained
            load_pretrained(self, cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def switch_to_deploy(self):
        """Fold every BatchNorm into its neighbouring conv/linear, in place, for inference.

        Children fold before their parents, so a parent may rely on its children being fused.
        """
        for module in reversed(list(self.modules())):
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
        self.deploy = True
        return self


def _run_all(blocks, x):
    for block in blocks:
        x = block(x)
    return x
