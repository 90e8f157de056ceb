"""The family manifest: one :class:`Family` entry per backbone family, the one place that lists them.

Tests, docs checks and tools enumerate families from :data:`FAMILIES` instead of keeping their own
lists: the contract tests (tests/test_models_contract.py) build each family's tiny arch, the
weights tests check its checkpoint layouts, the config tests every ``<prefix>_<arch>`` config,
:mod:`mmext.analysis.summarize` takes the papers' detection/segmentation results from here,
:mod:`mmext.benchmark.protocols` timm's names and the classification sizes.

Adding a family: its model file (``mmext/models/<family>.py``), its checkpoint-layout file
(``mmext/checkpoints/<family>.py``), an entry here and its configs. The import lines of
``mmext/checkpoints/__init__.py`` and the independence contracts of ``.importlinter`` are checked
against this manifest by tests (test_layers_contract.py), which name what is missing.

This module is plain data: it imports nothing of mmext (and no torch); :attr:`Family.cls` imports
the family's module when asked.
"""
import importlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: the setting of every :attr:`Arch.a100_latency_ms` (the SHViT paper times the others too)
PAPER_LATENCY_SETTING = 'A100, 512x512 (SHViT paper)'


@dataclass(frozen=True)
class Paper:
    """The paper that introduced a family."""
    title: str
    venue: str  # e.g. 'CVPR 2024'
    url: str


@dataclass(frozen=True)
class PaperResult:
    """A detection/segmentation result the family's paper reports for one arch."""
    task: str  # as mmext.analysis names tasks: 'RetinaNet', 'Mask R-CNN', 'Semantic FPN'
    dataset: str  # 'COCO' (val2017) or 'ADE20K' (val)
    bbox_mAP: Optional[float] = None
    segm_mAP: Optional[float] = None
    mIoU: Optional[float] = None


@dataclass(frozen=True)
class Arch:
    """What the papers and the release say about one named arch.

    ``params``/``macs``: the authors' figures in M / G, counted as the family's
    :attr:`Family.paper_counts` says (with or without the classifier, at ``cls_size``).
    ``dims``: the channels of the stage outputs (what the configs' necks take).
    ``weights``: the canonical URL of its ImageNet weights (``None``: none released).
    """
    dims: Tuple[int, ...]
    params: float
    macs: float
    cls_size: int = 224
    weights: Optional[str] = None
    a100_latency_ms: Optional[float] = None  # at PAPER_LATENCY_SETTING
    results: Tuple[PaperResult, ...] = ()


@dataclass(frozen=True)
class Family:
    """One backbone family.

    Attributes:
        name: the registry name and class (``'SHViT'``).
        prefix: the model/config name prefix (``'shvit'``: ``shvit_s4``,
            ``configs/*/shvit_s4_*.py``).
        module: the model file's module; ``layouts_module``: its checkpoint-layout module.
        layouts: the checkpoint layouts the family loads, in the order the layout module
            registers them.
        paper: the family's paper.
        archs: every named arch (``arch_settings``), in order, with its paper figures.
        strides: the output strides of the stages (every arch).
        paper_counts: how the authors count params/MACs: ``'backbone'`` (params without the
            classifier, MACs with one 1000-class linear head) or ``'distilled'`` (params and MACs
            with the final norm, head and distillation head).
        tiny: a small custom arch dict with every kind of block (the contract tests build it).
        smallest: the smallest named arch (round trips, one-per-family runs).
        unknown_arch: a name that is not an arch of the family (error-message tests).
        misspelt: ``(typo, key)``: a misspelling of an optional arch key and the key it should
            suggest.
        timm: timm has the archs under the same names (``shvit_s1`` ...).
    """
    name: str
    prefix: str
    module: str
    layouts_module: str
    layouts: Tuple[str, ...]
    paper: Paper
    archs: Dict[str, Arch]
    strides: Tuple[int, ...]
    paper_counts: str
    tiny: dict
    smallest: str
    unknown_arch: str
    misspelt: Tuple[str, str]
    timm: bool = False

    @property
    def cls(self):
        """The backbone class (imports :attr:`module`)."""
        return getattr(importlib.import_module(self.module), self.name)

    @property
    def num_stages(self):
        return len(self.strides)

    @property
    def reference(self):
        """How result tables cite the paper: ``'SHViT paper (CVPR 2024)'``."""
        return f'{self.name} paper ({self.paper.venue})'

    def model_name(self, arch):
        """``'s4'`` -> ``'shvit_s4'`` (the configs', the benchmark's and the zoo's name)."""
        return f'{self.prefix}_{arch}'

    def pretty(self, arch):
        """``'s4'`` -> ``'SHViT-S4'``."""
        return f'{self.name}-{arch.upper()}'


_SHVIT_URL = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_{}.pth'
_OPENMMLAB_URL = ('https://download.openmmlab.com/mmclassification/v0/efficientformer/'
                  'efficientformer-{}_3rdparty_in1k_{}.pth')
_TIMM_HF_URL = ('https://huggingface.co/timm/efficientformerv2_{}.snap_dist_in1k/resolve/main/'
                'model.safetensors')

_FAMILIES = [
    Family(
        name='SHViT', prefix='shvit', module='mmext.models.shvit',
        layouts_module='mmext.checkpoints.shvit', layouts=('mmext', 'official', 'timm'),
        paper=Paper('SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design',
                    'CVPR 2024', 'https://arxiv.org/abs/2401.16456'),
        archs={
            's1': Arch((128, 224, 320), 6.009, 0.241, weights=_SHVIT_URL.format('s1')),
            's2': Arch((128, 308, 448), 11.033, 0.365, weights=_SHVIT_URL.format('s2')),
            's3': Arch((192, 352, 448), 13.795, 0.601, weights=_SHVIT_URL.format('s3')),
            's4': Arch((224, 336, 448), 16.139, 0.986, cls_size=256,
                       weights=_SHVIT_URL.format('s4'), a100_latency_ms=0.28,
                       results=(PaperResult('RetinaNet', 'COCO', bbox_mAP=38.8),
                                PaperResult('Mask R-CNN', 'COCO', bbox_mAP=39.0,
                                            segm_mAP=35.9))),
        },
        strides=(16, 32, 64), paper_counts='backbone',
        tiny=dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], partial_dims=[8, 12, 16]),
        smallest='s1', unknown_arch='s9', misspelt=('qk_dims', 'qk_dim'), timm=True),
    Family(
        name='EfficientFormer', prefix='efficientformer', module='mmext.models.efficientformer',
        layouts_module='mmext.checkpoints.efficientformer',
        layouts=('mmext', 'mmpretrain', 'official', 'timm'),
        paper=Paper('EfficientFormer: Vision Transformers at MobileNet Speed', 'NeurIPS 2022',
                    'https://arxiv.org/abs/2206.01191'),
        archs={
            'l1': Arch((48, 96, 224, 448), 12.290, 1.291,
                       weights=_OPENMMLAB_URL.format('l1', '20220915-cc3e1ac6'),
                       a100_latency_ms=0.84,
                       results=(PaperResult('Mask R-CNN', 'COCO', bbox_mAP=37.9,
                                            segm_mAP=35.4), )),
            'l3': Arch((64, 128, 320, 512), 31.406, 3.907,
                       weights=_OPENMMLAB_URL.format('l3', '20220915-466793d6')),
            'l7': Arch((96, 192, 384, 768), 82.229, 10.119,
                       weights=_OPENMMLAB_URL.format('l7', '20220915-185e30af')),
        },
        strides=(4, 8, 16, 32), paper_counts='distilled',
        tiny=dict(embed_dims=[16, 24, 32, 48], depths=[1, 1, 1, 2], num_vit=1),
        smallest='l1', unknown_arch='l2', misspelt=('mlp_ratios', 'mlp_ratio'), timm=True),
    Family(
        name='EfficientFormerV2', prefix='efficientformerv2',
        module='mmext.models.efficientformer_v2',
        layouts_module='mmext.checkpoints.efficientformer_v2',
        layouts=('official', 'mmext/timm'),
        paper=Paper('Rethinking Vision Transformers for MobileNet Size and Speed', 'ICCV 2023',
                    'https://arxiv.org/abs/2212.08059'),
        archs={
            's0': Arch((32, 48, 96, 176), 3.600, 0.396, weights=_TIMM_HF_URL.format('s0')),
            's1': Arch((32, 48, 120, 224), 6.186, 0.652, weights=_TIMM_HF_URL.format('s1')),
            's2': Arch((32, 64, 144, 288), 12.710, 1.247, weights=_TIMM_HF_URL.format('s2'),
                       results=(PaperResult('Mask R-CNN', 'COCO', bbox_mAP=43.4,
                                            segm_mAP=39.5),
                                PaperResult('Semantic FPN', 'ADE20K', mIoU=42.4))),
            'l': Arch((40, 80, 192, 384), 26.322, 2.553, weights=_TIMM_HF_URL.format('l')),
        },
        strides=(4, 8, 16, 32), paper_counts='distilled',
        tiny=dict(embed_dims=[16, 16, 32, 32], depths=[1, 1, 2, 2], num_vit=1),
        smallest='s0', unknown_arch='s9', misspelt=('mlp_ratio', 'mlp_ratios'), timm=True),
    Family(
        name='EdgeViT', prefix='edgevit', module='mmext.models.edgevit',
        layouts_module='mmext.checkpoints.edgevit', layouts=('mmext', 'official'),
        paper=Paper('EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision '
                    'Transformers', 'ECCV 2022', 'https://arxiv.org/abs/2205.03436'),
        archs={  # no released weights (the authors published none)
            'xxs': Arch((36, 72, 144, 288), 3.778, 0.551, a100_latency_ms=0.88,
                        results=(PaperResult('RetinaNet', 'COCO', bbox_mAP=38.7), )),
            'xs': Arch((48, 96, 240, 384), 6.384, 1.128),
            's': Arch((48, 96, 240, 384), 12.722, 1.911),
        },
        strides=(4, 8, 16, 32), paper_counts='backbone',
        tiny=dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4]),
        smallest='xxs', unknown_arch='m', misspelt=('sample_ratio', 'sample_ratios')),
]

#: registry name -> :class:`Family`, in the order above
FAMILIES = {f.name: f for f in _FAMILIES}


def family_by_prefix(prefix):
    """``'shvit'`` -> the SHViT :class:`Family` (``KeyError`` for an unknown prefix)."""
    for family in FAMILIES.values():
        if family.prefix == prefix:
            return family
    raise KeyError(prefix)


def model_names():
    """Every ``<prefix>_<arch>`` (``'shvit_s1'`` ... ``'edgevit_s'``), family by family."""
    return [f.model_name(a) for f in FAMILIES.values() for a in f.archs]


def arch_entries():
    """``[(family, arch name, Arch), ...]`` for every named arch of every family."""
    return [(f, a, spec) for f in FAMILIES.values() for a, spec in f.archs.items()]


def paper_results():
    """The papers' results as rows (``model``, ``backbone``, ``task``, ``dataset``, metrics,
    ``reference``): what :data:`mmext.analysis.summarize.PAPER_RESULTS` holds."""
    rows = []
    for family, arch, spec in arch_entries():
        for r in spec.results:
            row = dict(model=family.pretty(arch), backbone=family.model_name(arch),
                       task=r.task, dataset=r.dataset)
            row.update({k: getattr(r, k) for k in ('bbox_mAP', 'segm_mAP', 'mIoU')
                        if getattr(r, k) is not None})
            row['reference'] = family.reference
            rows.append(row)
    return rows


def paper_latency():
    """``{'shvit_s4': 0.28, ...}``: the A100 latencies at :data:`PAPER_LATENCY_SETTING`."""
    return {family.model_name(arch): spec.a100_latency_ms for family, arch, spec in arch_entries()
            if spec.a100_latency_ms is not None}
