"""One checkpoint loader for every family.

A checkpoint flows one way: :func:`~mmext.checkpoints.sources.resolve_checkpoint` turns a path or
URL into a local file (downloading and verifying a URL once), :func:`read_checkpoint` reads it with
``weights_only=True`` or as ``.safetensors`` (checkpoints are untrusted input),
:func:`extract_state_dict` unwraps it (``'state_dict'``,
``'model'``, ``'module.'``, ``'backbone.'``), :func:`detect_layout` picks the source layout from
the family's table (:data:`LAYOUTS`, found through the model class's MRO so subclasses share
their base's layouts), the layout's pure key-mapping function turns it into mmext's own keys, and
:func:`load_pretrained` loads it, dropping classifier heads silently,
naming anything else that did not fit in one log message, and refusing shape mismatches.
"""
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Pattern, Tuple

import torch
from mmengine.logging import print_log

from mmext.checkpoints.files import check_output_file, same_file, save_tensors
from mmext.checkpoints.sources import is_safetensors, not_a_checkpoint, resolve_checkpoint
from mmext.compat import load_weights_only
from mmext.errors import CheckpointError, ConfigError, FusedCheckpointError, _unpickling_reason


@dataclass(frozen=True)
class Layout:
    """A source layout of one family's checkpoints.

    Attributes:
        name: short name shown to users (``'mmext'``, ``'official'``, ``'timm'``).
        detect: ``keys -> bool``, true when a state dict's keys are in this layout.
        convert: pure ``state_dict -> state_dict`` mapping to mmext's keys.
    """
    name: str
    detect: Callable[[List[str]], bool]
    convert: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """A backbone family's layouts and the keys of its classifier (dropped when loading)."""
    layouts: Tuple[Layout, ...]
    head_pattern: Pattern = field(default=re.compile(r'^(head|head_dist|dist_head)\.'))


#: family (backbone class name) -> :class:`Family`; each family's module registers itself here.
LAYOUTS: Dict[str, Family] = {}


def register_family(name, layouts, head_pattern=r'^(head|head_dist|dist_head)\.'):
    LAYOUTS[name] = Family(tuple(layouts), re.compile(head_pattern))


@dataclass
class LoadReport:
    layout: str
    loaded: List[str]
    missing: List[str]
    unexpected: List[str]


def identity(state_dict):
    """The mapping of mmext's own layout."""
    return dict(state_dict)


def rename_keys(state_dict, rules):
    """Apply ``(compiled_regex, replacement)`` rules, in order, to every key."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def read_checkpoint(path):
    """Read a checkpoint (a path or URL) with ``weights_only=True``, or a ``.safetensors`` file.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds pickled objects other than
            tensors and plain containers (which could run code when unpickled).
    """
    path = resolve_checkpoint(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f'Checkpoint not found: {path!r}. Put the ImageNet checkpoint there (see the README, '
            f'"Pretrained weights"; tools/convert_checkpoint.py converts the authors\' and timm\'s '
            f'files), point init_cfg.checkpoint at your file, or train from scratch with '
            f'--cfg-options model.backbone.init_cfg=None.')
    try:
        what = not_a_checkpoint(path)
    except OSError as exc:
        raise CheckpointError(f'Cannot read checkpoint {path!r}: {exc.strerror or exc}.') \
            from None
    if what is not None:
        raise CheckpointError(
            f'Could not read checkpoint {path!r}: it is {what}, not a checkpoint. Pass a .pth '
            f'file written by torch.save (e.g. by training) or a .safetensors file.')
    if is_safetensors(path):
        from safetensors.torch import load_file  # holds tensors only, by design
        try:
            return load_file(path, device='cpu')
        except Exception as exc:  # header or data corrupt
            raise CheckpointError(f'Could not read safetensors file {path!r}: {exc}') from None
    try:
        return load_weights_only(path, map_location='cpu')
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f'Refusing to load {path!r}: it holds pickled objects other than tensors, and mmext '
            f'loads checkpoints with weights_only=True because unpickling arbitrary objects can run '
            f'code. If you trust the file, re-save its tensors only (e.g. torch.save(state_dict)). '
            f'Details: {_unpickling_reason(exc)}') from None
    except Exception as exc:  # zip/pickle corruption, not a torch file, ...
        raise CheckpointError(f'Could not read checkpoint {path!r}: {exc}') from None


def extract_state_dict(obj):
    """Unwrap a loaded checkpoint to a flat ``{key: tensor}`` dict of backbone weights.

    Handles ``{'state_dict': ...}`` (mmengine), ``{'model': ...}`` (the authors'), ``module.``
    prefixes (DDP) and full detector/segmentor checkpoints (keeps ``backbone.*`` only).
    """
    while isinstance(obj, dict):
        for wrapper in ('state_dict', 'model', 'module'):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f'Checkpoint holds a {type(obj).__name__}, not a state dict.')
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if not state:
        raise CheckpointError('Checkpoint holds no tensors.')
    return state


def family_of(model):
    """The layout family of a backbone: its class name or the first base class with layouts."""
    cls = model if isinstance(model, type) else type(model)
    for klass in cls.__mro__:
        if klass.__name__ in LAYOUTS:
            return klass.__name__
    raise CheckpointError(
        f'mmext knows no checkpoint layouts for {cls.__name__} or its base classes; the families '
        f'with layouts are {", ".join(LAYOUTS)}.')


def detect_layout(state_dict, family_name):
    """Return the :class:`Layout` of ``state_dict`` among the family's known layouts."""
    family = LAYOUTS.get(family_name)
    if family is None:
        raise CheckpointError(f'mmext knows no checkpoint layouts for {family_name!r}.')
    keys = list(state_dict)
    for layout in family.layouts:
        if layout.detect(keys):
            return layout
    sample = ', '.join(keys[:5])
    raise CheckpointError(
        f'This checkpoint is not a {family_name} checkpoint in any layout mmext knows '
        f'({", ".join(l.name for l in family.layouts)}); its first keys are: {sample}. '
        f'Check that init_cfg.checkpoint names the right family.')


def convert_state_dict(state_dict, family_name):
    """Map a backbone state dict of any known layout to mmext's keys, without the classifier.

    Returns:
        tuple: ``(layout_name, converted_state_dict)``.
    """
    layout = detect_layout(state_dict, family_name)
    converted = layout.convert(state_dict)
    head = LAYOUTS[family_name].head_pattern
    converted = {k: v for k, v in converted.items() if not head.search(k)}
    return layout.name, converted


def load_pretrained(model, path, logger='current'):
    """Load ImageNet weights from ``path`` (a file or URL) into an mmext backbone, in any layout.

    Classifier keys are dropped silently. Missing and unexpected keys are named in one warning;
    a shape mismatch raises :class:`CheckpointError` (it means another arch or family).

    Returns:
        LoadReport
    """
    family = family_of(model)
    layout, state = convert_state_dict(extract_state_dict(read_checkpoint(path)), family)
    return _load_converted(model, state, layout, path, logger)


def _load_converted(model, state, layout, path, logger):
    """Load an mmext-layout ``state`` into ``model``; see :func:`load_pretrained`."""
    family = family_of(model)
    # Fused vs unfused is told on the whole state dict: once the keys the model lacks are
    # dropped, a fused model whose structure has no keys of its own (EdgeViT) cannot tell.
    # (unfused weights for a deploy=True model are folded, fused ones for an unfused model
    # refused: BaseBackbone.adapt_state_dict, the one fused/unfused path)
    adapt = getattr(model, 'adapt_state_dict', None)
    if adapt is not None:
        try:
            state = adapt(dict(state))
        except CheckpointError as exc:
            raise type(exc)(f'{path!r}: {exc}') from None
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    arch = getattr(model, 'arch_name', '?')
    if mismatched:
        raise CheckpointError(
            f'{path!r} ({layout} layout) does not fit {family} arch {arch!r}: '
            f'{len(mismatched)} tensors have other shapes, e.g. ' + '; '.join(mismatched[:5]) +
            '. Use the checkpoint of the same arch.')
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    loaded = [k for k in state if k in own]
    if not loaded:
        raise CheckpointError(f'No tensor of {path!r} fits {family} arch {arch!r}.')
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    message = (f'Loaded {len(loaded)} tensors into {family}-{arch} from {path} '
               f'({layout} layout).')
    if missing or unexpected:
        message += (f' Missing in the checkpoint ({len(missing)}): {missing}. '
                    f'Unexpected in the checkpoint ({len(unexpected)}): {unexpected}.')
        print_log(message, logger=logger, level=logging.WARNING)
    else:
        print_log(message, logger=logger, level=logging.INFO)
    return LoadReport(layout, loaded, missing, unexpected)


def _is_pretrained(cfg):
    return isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'


def pretrained_entry(init_cfg):
    """The ``type='Pretrained'`` dict of an ``init_cfg`` given as a dict or a list, else ``None``.

    Raises:
        ConfigError: more than one ``Pretrained`` entry, or one without a checkpoint.
    """
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    pretrained = [c for c in cfgs if _is_pretrained(c)]
    if not pretrained:
        return None
    if len(pretrained) > 1:
        raise ConfigError(f'init_cfg has {len(pretrained)} Pretrained entries; give one.')
    if not pretrained[0].get('checkpoint'):
        raise ConfigError("init_cfg type='Pretrained' needs checkpoint=<path or URL>.")
    return pretrained[0]


def init_pretrained(model, init_cfg, logger='current'):
    """Apply an ``init_cfg`` given as a dict or a list, with mmext's loader for ``Pretrained``.

    mmengine accepts ``init_cfg=dict(type='Pretrained', checkpoint=...)`` and a list of such
    dicts. The ``Pretrained`` entry (a path or URL) goes through mmext's layout conversion; any
    other entries of a list (e.g. ``Kaiming`` for some layers) are applied first by mmengine, in
    their order, so the pretrained weights win as they would in mmengine.

    Returns:
        LoadReport | None: ``None`` when ``init_cfg`` has no ``Pretrained`` entry (the caller then
        runs mmengine's own initialisation).
    """
    cfg = pretrained_entry(init_cfg)
    if cfg is None:
        return None
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    others = [c for c in cfgs if not _is_pretrained(c)]
    if others:
        from mmengine.model.weight_init import initialize
        initialize(model, [dict(c) for c in others])
    return load_pretrained(model, cfg['checkpoint'], logger=logger)


def convert_checkpoint(src, dst, family, arch=None, force=False):
    """Write an mmext-native, tensors-only checkpoint (``{'state_dict': ...}``) from ``src``.

    When ``arch`` is given the weights are checked by loading them into that backbone first.
    ``dst`` must not exist unless ``force``, and is never ``src`` (nor the file a URL resolves
    to); it is written to a temporary file next to it and renamed into place once complete
    (:func:`mmext.checkpoints.files.atomic_write`), so a failure leaves no partial file and an
    existing ``dst`` as it was.

    Returns:
        tuple: ``(layout_name, number_of_tensors)``.
    """
    local_src = None if isinstance(src, str) and src.startswith(('http://', 'https://')) else src
    check_output_file(dst, force, inputs=(local_src, ), what='output checkpoint')
    path = resolve_checkpoint(src)
    if same_file(path, dst):
        raise CheckpointError(f'the output {os.fspath(dst)!r} is the file {src} resolves to; '
                              'write the converted checkpoint to another file.')
    layout, state = convert_state_dict(extract_state_dict(read_checkpoint(path)), family)
    if arch is not None:
        from mmext.registry import MODELS
        model = MODELS.build(dict(type=family, arch=arch))
        load_pretrained(model, path)
        state = {k: v for k, v in model.state_dict().items()}
    save_tensors({'state_dict': state, 'meta': {'family': family, 'source_layout': layout}}, dst,
                 what='output checkpoint')
    return layout, len(state)
