"""Where checkpoint files come from: a local path, or a URL downloaded once into a cache.

:func:`resolve_checkpoint` turns what ``init_cfg.checkpoint`` says into a local file:

* a path is returned as it is (``~`` expanded);
* an ``http(s)://`` URL is looked up, in order, in the folder named by ``MMEXT_WEIGHTS_DIR`` (for
  offline clusters: a file there named as the URL's cache name, or ``<model>.pth`` for a zoo
  model, is used without any request), then in the download cache, and only then downloaded.

The cache is ``$MMEXT_CACHE_DIR`` when set, else torch hub's ``<torch hub dir>/checkpoints``
(``~/.cache/torch/hub/checkpoints``, moved by ``TORCH_HOME``), which mmengine and torchvision use
too. A download goes to a temporary file next to its final place, is checked against the known
sha256 (the zoo's, or the 8-digit prefix in OpenMMLab file names such as
``..._20220915-cc3e1ac6.pth``) and renamed into place only when it passes, so the cache never
holds half files. Connect and read time out after ``MMEXT_DOWNLOAD_TIMEOUT`` seconds (default
10): without a network a download fails within seconds with one
:class:`~mmext.errors.CheckpointError` naming the URL, the cache path and how to place the file
by hand.
"""
import hashlib
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from mmext.errors import CheckpointError

DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 20
_OPENMMLAB_HASH = re.compile(r'-([0-9a-f]{8,64})\.(pth|pt|safetensors|bin)$')


def is_url(checkpoint):
    return isinstance(checkpoint, str) and checkpoint.startswith(('http://', 'https://'))


def cache_dir():
    """The download cache folder (``$MMEXT_CACHE_DIR`` or torch hub's ``checkpoints``)."""
    env = os.environ.get('MMEXT_CACHE_DIR')
    if env:
        return os.path.expanduser(env)
    import torch.hub
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def download_timeout():
    """Seconds to wait for a connection or for the next bytes (``MMEXT_DOWNLOAD_TIMEOUT``)."""
    value = os.environ.get('MMEXT_DOWNLOAD_TIMEOUT')
    if not value:
        return DEFAULT_TIMEOUT
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if timeout <= 0:
        raise CheckpointError(f'MMEXT_DOWNLOAD_TIMEOUT={value!r} is not a positive number of '
                              f'seconds; set it to e.g. 30 or unset it (default 10).')
    return timeout


def cache_name(url):
    """The file name a URL is cached under.

    The URL's last path part, except for Hugging Face hub files (``.../<repo>/resolve/<rev>/
    model.safetensors``), whose names are the same for every model: those become
    ``<repo>_<file>`` (``efficientformerv2_s0.snap_dist_in1k_model.safetensors``).
    """
    path = urllib.parse.urlparse(url).path
    parts = [p for p in path.split('/') if p]
    if not parts:
        raise CheckpointError(f'{url!r} names no file; give the URL of a checkpoint file.')
    if 'resolve' in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index('resolve')
        if at >= 1:
            return f'{parts[at - 1]}_{parts[-1]}'
    return parts[-1]


def expected_sha256(url):
    """The known sha256 (or its prefix, lower case) of the file at ``url``, or ``None``."""
    from mmext.checkpoints.zoo import weights_for_url
    weights = weights_for_url(url)
    if weights is not None and weights.sha256:
        return weights.sha256.lower()
    m = _OPENMMLAB_HASH.search(cache_name(url))
    return m[1] if m else None


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path, url, expected):
    """Check a file placed by hand (MMEXT_WEIGHTS_DIR); it is the user's, so it is kept."""
    if expected is None:
        return
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise CheckpointError(
            f'{path} (in MMEXT_WEIGHTS_DIR, standing for {url}) failed the hash check: its '
            f'sha256 is {actual}, expected {expected}{"..." if len(expected) < 64 else ""}. The '
            f'file was left in place: replace it with an intact download of {url}.')


def _by_hand(url, dst):
    return (f'Download it on a machine with internet access and place it at {dst} (or in a '
            f'folder named by MMEXT_WEIGHTS_DIR, see the README, "Pretrained weights"), or point '
            f'init_cfg.checkpoint at a local file.')


def download(url, dst, sha256=None, timeout=None):
    """Download ``url`` to ``dst`` atomically (temporary file, hash check, rename).

    Raises:
        CheckpointError: the download failed or timed out, or the hash does not match (then
            nothing is left behind).
    """
    timeout = download_timeout() if timeout is None else timeout
    folder = os.path.dirname(os.path.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f'Cannot create the weights cache {folder!r} ({exc}); set '
                              f'MMEXT_CACHE_DIR to a writable folder.') from None
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dst) + '.', suffix='.part', dir=folder)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, 'wb') as out:
            request = urllib.request.Request(url, headers={'User-Agent': 'mmext'})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(_CHUNK), b''):
                    out.write(chunk)
                    digest.update(chunk)
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError,
            ValueError) as exc:
        _remove(tmp)
        reason = getattr(exc, 'reason', None) or exc
        raise CheckpointError(
            f'Could not download {url} ({type(exc).__name__}: {reason}; timeout {timeout:g} s, '
            f'MMEXT_DOWNLOAD_TIMEOUT changes it). {_by_hand(url, dst)}') from None
    except BaseException:
        _remove(tmp)
        raise
    actual = digest.hexdigest()
    if sha256 is not None and not actual.startswith(sha256.lower()):
        _remove(tmp)
        raise CheckpointError(
            f'The download of {url} failed the hash check: its sha256 is {actual}, expected '
            f'{sha256}{"..." if len(sha256) < 64 else ""}. The partial file was deleted and '
            f'nothing was written to {dst}. Try again; if it keeps failing, the file at that URL '
            f'has changed. {_by_hand(url, dst)}')
    os.replace(tmp, dst)
    return dst


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def local_candidates(url):
    """Files in ``$MMEXT_WEIGHTS_DIR`` that stand for ``url``: ``[(path, is_original_file)]``."""
    folder = os.environ.get('MMEXT_WEIGHTS_DIR')
    if not folder:
        return []
    folder = os.path.expanduser(folder)
    from mmext.checkpoints.zoo import weights_for_url
    found = [(os.path.join(folder, cache_name(url)), True)]
    weights = weights_for_url(url)
    if weights is not None:  # written by tools/download_weights.py
        found.append((os.path.join(folder, f'{weights.name}.pth'), False))
    return found


def resolve_checkpoint(checkpoint):
    """The local file for a path or URL, downloading a URL into the cache the first time."""
    from mmext.utils import is_remote
    if not is_url(checkpoint):
        if is_remote(checkpoint):
            raise CheckpointError(
                f'{checkpoint!r}: mmext downloads http:// and https:// URLs only; copy the file '
                f'to a local path (or MMEXT_WEIGHTS_DIR) and point init_cfg.checkpoint at it.')
        return os.path.expanduser(os.fspath(checkpoint))
    url = checkpoint
    expected = expected_sha256(url)
    for path, original in local_candidates(url):
        if os.path.isfile(path):
            if original:
                _check_hash(path, url, expected)
            return path
    dst = os.path.join(cache_dir(), cache_name(url))
    if os.path.isfile(dst):
        return dst
    if os.environ.get('MMEXT_WEIGHTS_DIR'):
        tried = ', '.join(p for p, _ in local_candidates(url))
        raise CheckpointError(
            f'MMEXT_WEIGHTS_DIR is set but holds none of {tried} for {url}, and the file is not '
            f'in the cache ({dst}). Put the file there (tools/download_weights.py --out writes '
            f'these names), or unset MMEXT_WEIGHTS_DIR to download it.')
    return download(url, dst, sha256=expected)
