"""What a benchmark times and how: the backbones (from the registry), the protocols, the modes.

Protocols (:data:`PROTOCOLS`):

=================  ======  =====  ===========  ======================================================
name               device  batch  input        notes
=================  ======  =====  ===========  ======================================================
gpu_throughput     cuda    256    224 (S4 256) fp16 autocast, images/s (the SHViT paper's GPU protocol)
gpu_latency_det    cuda    1      800x1344     fp32, detection input
gpu_latency_seg    cuda    1      512x512      fp32, segmentation input
cpu_throughput     cpu     16     224 (S4 256) one thread (the SHViT paper's CPU protocol)
cpu_latency_seg    cpu     1      512x512      one thread
cpu_latency_det    cpu     1      800x1344     one thread, detection input
=================  ======  =====  ===========  ======================================================

The backbones (:data:`ARCHS`) are every arch of every mmext backbone family in the registry,
named ``<family>_<arch>`` (``shvit_s1``, ``efficientformerv2_l`` ...), as the configs name them.
"""
from dataclasses import dataclass

import torch

from mmext.deploy.runners import MODES
from mmext.errors import ConfigError
from mmext.models.families import FAMILIES as FAMILIES_MANIFEST, arch_entries


@dataclass(frozen=True)
class Arch:
    """A benchmarked backbone: mmext ``type``/``arch``, timm's name and its classification size."""
    name: str
    type: str
    arch: str
    timm: str = None
    cls_size: int = 224


#: Families timm has under the same model names as mmext's (``shvit_s1`` ...).
TIMM_FAMILIES = tuple(f.name for f in FAMILIES_MANIFEST.values() if f.timm)
#: Archs whose papers classify at another size than 224.
CLS_SIZES = {f.model_name(a): spec.cls_size for f, a, spec in arch_entries()
             if spec.cls_size != 224}


def backbone_families():
    """``{family name: backbone class}`` of every mmext backbone in the registry."""
    import mmext.models  # noqa: F401  (registers the backbones)
    from mmext.registry import MODELS
    return {name: cls for name, cls in sorted(MODELS.module_dict.items())
            if getattr(cls, 'arch_settings', None)}


def arch_table():
    """Every ``<family>_<arch>`` of the registered families as :class:`Arch` entries."""
    table = {}
    for family, cls in backbone_families().items():
        for arch in cls.arch_settings:
            name = f'{family.lower()}_{arch}'
            table[name] = Arch(name, family, arch,
                               timm=name if family in TIMM_FAMILIES else None,
                               cls_size=CLS_SIZES.get(name, 224))
    return table


ARCHS = arch_table()

# The ResNet-50 reference (not an mmext model; eager only).
REFERENCE = Arch('resnet50', 'ResNet', '50', 'resnet50')


@dataclass(frozen=True)
class Protocol:
    """How to time: device, batch, input size (``None``: the arch's classification size)."""
    name: str
    device: str
    kind: str  # 'throughput' or 'latency'
    batch: int
    size: tuple = None
    amp: bool = False
    threads: int = None
    warmup: int = 10
    iters: int = 50
    description: str = ''


PROTOCOLS = {p.name: p for p in [
    Protocol('gpu_throughput', 'cuda', 'throughput', 256, None, amp=True, warmup=20, iters=100,
             description='GPU, batch 256, 224 (SHViT-S4: 256), fp16 autocast'),
    Protocol('gpu_latency_det', 'cuda', 'latency', 1, (800, 1344), warmup=30, iters=200,
             description='GPU, batch 1, 800x1344, fp32'),
    Protocol('gpu_latency_seg', 'cuda', 'latency', 1, (512, 512), warmup=30, iters=200,
             description='GPU, batch 1, 512x512, fp32'),
    Protocol('cpu_throughput', 'cpu', 'throughput', 16, None, threads=1, warmup=3, iters=20,
             description='CPU, 1 thread, batch 16, 224 (SHViT-S4: 256)'),
    Protocol('cpu_latency_seg', 'cpu', 'latency', 1, (512, 512), threads=1, warmup=3, iters=20,
             description='CPU, 1 thread, batch 1, 512x512'),
    Protocol('cpu_latency_det', 'cpu', 'latency', 1, (800, 1344), threads=1, warmup=2, iters=10,
             description='CPU, 1 thread, batch 1, 800x1344'),
]}

DEFAULT_MODES = {'cuda': ('eager', 'deploy', 'channels_last', 'bf16', 'compile', 'cuda_graph'),
                 'cpu': ('eager', 'deploy', 'bf16', 'onnxruntime')}
TINY = dict(batch=2, size=(64, 64), warmup=1, iters=3)


FAMILIES = tuple(sorted({a.type.lower() for a in ARCHS.values()}))


def _expand(names, table, what, groups=None):
    if names is None:
        return None
    if isinstance(names, str):
        names = [n for n in names.replace(',', ' ').split() if n]
    out = []
    for name in names:
        key = name.lower()
        if key == 'all':
            picked = list(table)
        elif groups and key in groups:
            picked = groups[key]
        elif key in table:
            picked = [key]
        else:
            extra = f' (or {", ".join(groups)})' if groups else ''
            raise ConfigError(f'unknown {what} {name!r}; choose from {", ".join(table)}{extra} '
                              'or all.')
        out += [p for p in picked if p not in out]
    return out


def resolve_archs(names=None):
    """Arch names (``'shvit_s1'``...), family names (``'shvit'``) or ``'all'`` (the default)."""
    groups = {f: [n for n in ARCHS if n.rsplit('_', 1)[0] == f] for f in FAMILIES}
    return [ARCHS[n] for n in (_expand(names, ARCHS, 'arch', groups) or list(ARCHS))]


def resolve_protocols(names=None):
    """Protocol names or ``'all'``; the default is the GPU ones with CUDA, else the CPU ones."""
    groups = {'gpu': [n for n, p in PROTOCOLS.items() if p.device == 'cuda'],
              'cpu': [n for n, p in PROTOCOLS.items() if p.device == 'cpu']}
    picked = _expand(names, PROTOCOLS, 'protocol', groups)
    if picked is None:
        picked = groups['gpu'] if torch.cuda.is_available() else groups['cpu']
    return [PROTOCOLS[n] for n in picked]


def resolve_modes(names=None):
    """Mode names or ``'all'``; ``None`` picks :data:`DEFAULT_MODES` per protocol device."""
    return _expand(names, {m: m for m in MODES}, 'mode')


def modes_for_device(names, device):
    """The modes to run on ``device``: :data:`DEFAULT_MODES` for ``None``, every mode this
    machine supports there for ``'all'`` (see :func:`mmext.deploy.runners.skip_reason`), else
    the named modes (those that cannot run give skipped rows that say why)."""
    from mmext.deploy.runners import skip_reason
    picked = resolve_modes(names)
    if picked is None:
        return list(DEFAULT_MODES[device])
    listed = names.replace(',', ' ').split() if isinstance(names, str) else list(names)
    if any(str(n).lower() == 'all' for n in listed):
        return [m for m in picked if not skip_reason(m, device)] or picked
    return picked

