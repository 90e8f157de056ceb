"""Fetch, verify and convert the zoo's weights ahead of time (``tools/download_weights.py``).

:func:`prepare_weights` downloads a model's file into the cache (or takes it from the cache or
``MMEXT_WEIGHTS_DIR``), checks its hash where one is known, loads it into the model's backbone
to verify that it fits, and writes an mmext-layout, tensors-only ``<out>/<model>.pth``. A folder
of these files is what ``MMEXT_WEIGHTS_DIR`` expects on an offline cluster.

A downloaded file is loaded into its backbone before it goes into the cache: a mirror's file of
another model or arch is named and dropped, never cached under the wanted model's name. An
existing ``<out>/<model>.pth`` is kept unless ``force``.
"""
import os
import urllib.parse

from mmext.checkpoints.loading import convert_checkpoint, load_pretrained
from mmext.checkpoints.sources import (cache_dir, cache_name, download, expected_sha256,
                                       resolve_checkpoint)
from mmext.checkpoints.zoo import ZOO, get_weights
from mmext.errors import CheckpointError


def mirror_url(url, mirror):
    """``url``'s file under another base URL: ``<mirror>/<cache name of url>``."""
    return urllib.parse.urljoin(mirror.rstrip('/') + '/', cache_name(url))


def fits(weights):
    """``validate(path)`` for :func:`~mmext.checkpoints.sources.download`: the file loads into
    ``weights``' backbone (its family and arch)."""
    def validate(path):
        from mmext.registry import MODELS
        load_pretrained(MODELS.build(dict(type=weights.family, arch=weights.arch)), path)
    return validate


def fetch_source(name, mirror=None, deadline=None):
    """The local source file of zoo model ``name``: from MMEXT_WEIGHTS_DIR, the cache, or a download
    (from ``mirror`` instead of the canonical host when given; ``deadline``: see
    :func:`~mmext.checkpoints.sources.download`)."""
    weights = get_weights(name)
    if mirror is None:
        return resolve_checkpoint(weights.url, validate=fits(weights), deadline=deadline)
    dst = os.path.join(cache_dir(), cache_name(weights.url))
    if os.path.isfile(dst):
        return dst
    return download(mirror_url(weights.url, mirror), dst, sha256=expected_sha256(weights.url),
                    validate=fits(weights), deadline=deadline)


def prepare_weights(name, out_dir, mirror=None, force=False, deadline=None):
    """Fetch, verify and convert zoo model ``name`` to ``<out_dir>/<name>.pth``.

    An existing ``<out_dir>/<name>.pth`` is kept (nothing is fetched) unless ``force``.

    Returns:
        tuple: ``(path, source layout, number of tensors)``; layout and count are ``None`` when
        an existing file was kept.
    """
    weights = get_weights(name)
    dst = os.path.join(out_dir, f'{weights.name}.pth')
    if os.path.isfile(dst) and not force:
        return dst, None, None
    src = fetch_source(name, mirror=mirror, deadline=deadline)
    try:
        layout, count = convert_checkpoint(src, dst, weights.family, arch=weights.arch,
                                           force=force)
    except CheckpointError as exc:
        if os.path.dirname(os.path.abspath(src)) != os.path.abspath(cache_dir()):
            raise
        raise CheckpointError(f'{exc} (The cached file {src} stands for {weights.url}: delete '
                              'it to download it again.)') from None
    return dst, layout, count


def expand_names(names):
    """``['all']`` -> every zoo model; otherwise the names, lower-cased, in order, once each."""
    if not names or any(n.lower() == 'all' for n in names):
        return list(ZOO)
    return list(dict.fromkeys(n.lower() for n in names))
