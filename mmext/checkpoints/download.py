"""Fetch, verify and convert the zoo's weights ahead of time (``tools/download_weights.py``).

:func:`prepare_weights` downloads a model's file into the cache (or takes it from the cache or
``MMEXT_WEIGHTS_DIR``), checks its hash where one is known, loads it into the model's backbone
to verify that it fits, and writes an mmext-layout, tensors-only ``<out>/<model>.pth``. A folder
of these files is what ``MMEXT_WEIGHTS_DIR`` expects on an offline cluster.
"""
import os
import urllib.parse

from mmext.checkpoints.loading import convert_checkpoint
from mmext.checkpoints.sources import (cache_dir, cache_name, download, expected_sha256,
                                       resolve_checkpoint)
from mmext.checkpoints.zoo import ZOO, get_weights


def mirror_url(url, mirror):
    """``url``'s file under another base URL: ``<mirror>/<cache name of url>``."""
    return urllib.parse.urljoin(mirror.rstrip('/') + '/', cache_name(url))


def fetch_source(name, mirror=None):
    """The local source file of zoo model ``name``: from MMEXT_WEIGHTS_DIR, the cache, or a download
    (from ``mirror`` instead of the canonical host when given)."""
    weights = get_weights(name)
    if mirror is None:
        return resolve_checkpoint(weights.url)
    dst = os.path.join(cache_dir(), cache_name(weights.url))
    if os.path.isfile(dst):
        return dst
    return download(mirror_url(weights.url, mirror), dst, sha256=expected_sha256(weights.url))


def prepare_weights(name, out_dir, mirror=None):
    """Fetch, verify and convert zoo model ``name`` to ``<out_dir>/<name>.pth``.

    Returns:
        tuple: ``(path written, source layout, number of tensors)``.
    """
    weights = get_weights(name)
    src = fetch_source(name, mirror=mirror)
    dst = os.path.join(out_dir, f'{weights.name}.pth')
    layout, count = convert_checkpoint(src, dst, weights.family, arch=weights.arch)
    return dst, layout, count


def expand_names(names):
    """``['all']`` -> every zoo model; otherwise the names, lower-cased, in order, once each."""
    if not names or any(n.lower() == 'all' for n in names):
        return list(ZOO)
    return list(dict.fromkeys(n.lower() for n in names))
