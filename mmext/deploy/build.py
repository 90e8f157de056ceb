"""An mmext backbone by family name and arch, ready to run or export."""
from mmext.errors import ConfigError


def build_backbone(type, arch, checkpoint=None, out_indices=None, deploy=True, **kwargs):
    """An mmext backbone from :data:`mmext.registry.MODELS`, eval mode, optionally fused.

    ``checkpoint``: ImageNet weights in any layout mmext converts (loaded like ``init_cfg``).
    """
    from mmext.registry import MODELS
    import mmext.models  # noqa: F401  (registers the backbones)
    cls = MODELS.get(type)
    if cls is None:
        names = sorted(k for k, v in MODELS.module_dict.items() if hasattr(v, 'arch_settings'))
        raise ConfigError(f'unknown backbone type {type!r}; mmext has {", ".join(names)}.')
    cfg = dict(arch=arch, **kwargs)
    if out_indices is not None:
        cfg['out_indices'] = tuple(out_indices)
    if checkpoint:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=str(checkpoint))
    model = cls(**cfg)
    if checkpoint:
        model.init_weights()
    model.eval()
    if deploy and hasattr(model, 'switch_to_deploy'):
        model.switch_to_deploy()
    return model
