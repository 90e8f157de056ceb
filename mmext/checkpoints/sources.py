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
holds half files. Before the rename the file is checked to be a checkpoint at all (an HTML
login or error page, a text or JSON answer is named as such and not kept), and, when the caller
knows which model it is for, to fit that model. Connect and read time out after
``MMEXT_DOWNLOAD_TIMEOUT`` seconds (default 10), and a whole download after
``MMEXT_DOWNLOAD_DEADLINE`` seconds (default 3600; a server that trickles bytes never trips the
read timeout): without a network a download fails within seconds with one
:class:`~mmext.errors.CheckpointError` naming the URL, the cache path and how to place the file
by hand. Cached files get the permissions of any file the user creates (0644 under umask 022).
"""
import hashlib
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from mmext.checkpoints.files import normal_mode
from mmext.errors import CheckpointError, os_error_hint

DEFAULT_TIMEOUT = 10.0
DEFAULT_DEADLINE = 3600.0
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


def _seconds_from_env(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float('inf'):
        raise CheckpointError(f'{name}={value!r} is not a positive number of seconds; set it to '
                              f'e.g. {3 * default:g} or unset it (default {default:g}).')
    return seconds


def download_timeout():
    """Seconds to wait for a connection or for the next bytes (``MMEXT_DOWNLOAD_TIMEOUT``)."""
    return _seconds_from_env('MMEXT_DOWNLOAD_TIMEOUT', DEFAULT_TIMEOUT)


def download_deadline():
    """Seconds a whole download may take (``MMEXT_DOWNLOAD_DEADLINE``, default 3600)."""
    return _seconds_from_env('MMEXT_DOWNLOAD_DEADLINE', DEFAULT_DEADLINE)


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


def is_safetensors(path):
    """True for a ``.safetensors`` file (by name, or by its header: length, then a JSON object)."""
    if str(path).endswith('.safetensors'):
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    return _safetensors_head(head)


def _safetensors_head(head):
    return len(head) >= 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < 1 << 30


_HTML = (b'<!doctype html', b'<html', b'<head', b'<body', b'<!--', b'<title')


def not_a_checkpoint(path, content_type=None):
    """``None`` when ``path`` starts as a checkpoint does (``torch.save``'s zip or pickle, or a
    safetensors header); else what it is instead, in a few words (``'an HTML page'``)."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80' or _safetensors_head(head):
        return None
    if not head:
        return 'an empty file'
    text = head.lstrip().lower()
    if text.startswith(_HTML) or 'html' in str(content_type or '').lower():
        return 'an HTML page'
    if text.startswith(b'<'):
        return 'an XML document'
    if text[:1] in (b'{', b'['):
        return 'JSON text'
    if head.startswith(b'\x1f\x8b'):
        return 'a gzip archive'
    lines = head.decode('utf-8', 'replace').strip().splitlines()
    if b'\x00' in head:
        return f'a file of another kind (its first bytes are {head[:8]!r})'
    if not lines:
        return 'a blank text file'
    return f'a text file (its first line: {lines[0][:60]!r})'


def _by_hand(url, dst):
    return (f'Download it on a machine with internet access and place it at {dst} (or in a '
            f'folder named by MMEXT_WEIGHTS_DIR, see the README, "Pretrained weights"), or point '
            f'init_cfg.checkpoint at a local file.')


class _DeadlinePassed(Exception):
    pass


class _Truncated(Exception):
    """The connection closed before the announced Content-Length arrived."""


def _open_part_file(dst):
    """A temporary file next to ``dst`` (in the cache): ``(fd, path)``."""
    folder = os.path.dirname(os.path.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkstemp(prefix=os.path.basename(dst) + '.', suffix='.part', dir=folder)
    except OSError as exc:
        reason = exc.strerror or exc
        raise CheckpointError(f'Cannot write into the weights cache {folder!r} ({reason}; '
                              f'{os_error_hint(exc)}); set MMEXT_CACHE_DIR to a writable '
                              'folder.') from None


def _fetch(url, out, timeout, deadline, digest):
    """Copy ``url`` into the open file ``out``; returns the Content-Type. Reads what has arrived
    (``read1``), so the deadline is looked at after every read, however slow the bytes come."""
    start, got = time.monotonic(), 0
    request = urllib.request.Request(url, headers={'User-Agent': 'mmext'})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        announced = response.headers.get('Content-Length')
        while True:
            if time.monotonic() - start > deadline:
                raise _DeadlinePassed()
            chunk = response.read1(_CHUNK)
            if not chunk:  # http.client does not tell a closed connection from the end
                if announced and announced.isdigit() and got != int(announced):
                    raise _Truncated(f'{got} of {announced} bytes')
                return response.headers.get('Content-Type')
            got += len(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise CheckpointError(
                    f'Cannot write the download of {url} into the weights cache '
                    f'{os.path.dirname(out.name)!r} ({exc.strerror or exc}; {os_error_hint(exc)});'
                    ' set MMEXT_CACHE_DIR to another folder. Nothing was kept.') from None
            digest.update(chunk)


def download(url, dst, sha256=None, timeout=None, deadline=None, validate=None):
    """Download ``url`` to ``dst`` atomically (temporary file, checks, rename).

    Args:
        timeout: seconds for the connection and for each read (``MMEXT_DOWNLOAD_TIMEOUT``).
        deadline: seconds for the whole download (``MMEXT_DOWNLOAD_DEADLINE``).
        validate: ``validate(path)`` raises :class:`CheckpointError` when the downloaded file
            is not the checkpoint wanted (e.g. does not fit its model); it is then not kept.

    Raises:
        CheckpointError: the download failed, took too long, is not a checkpoint, does not
            validate, or the hash does not match (then nothing is left behind).
    """
    timeout = download_timeout() if timeout is None else timeout
    deadline = download_deadline() if deadline is None else deadline
    fd, tmp = _open_part_file(dst)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, 'wb') as out:
            content_type = _fetch(url, out, timeout, deadline, digest)
    except _DeadlinePassed:
        size = os.path.getsize(tmp)
        _remove(tmp)
        raise CheckpointError(
            f'The download of {url} did not finish within its deadline of {deadline:g} s '
            f'({size} bytes had arrived; MMEXT_DOWNLOAD_DEADLINE changes the deadline). Nothing '
            f'was written to {dst}. {_by_hand(url, dst)}') from None
    except _Truncated as exc:
        _remove(tmp)
        raise CheckpointError(
            f'The download of {url} stopped after {exc} (the connection closed); nothing was '
            f'kept in the cache ({dst}). Try again. {_by_hand(url, dst)}') from None
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
    what = not_a_checkpoint(tmp, content_type)
    if what is not None:
        _remove(tmp)
        raise CheckpointError(
            f'{url} returned {what}, not a checkpoint (a login, error or listing page, or a '
            f'wrong link?); nothing was kept in the cache ({dst}). Check the URL (or --mirror). '
            f'{_by_hand(url, dst)}')
    actual = digest.hexdigest()
    if sha256 is not None and not actual.startswith(sha256.lower()):
        _remove(tmp)
        raise CheckpointError(
            f'The download of {url} failed the hash check: its sha256 is {actual}, expected '
            f'{sha256}{"..." if len(sha256) < 64 else ""}. The partial file was deleted and '
            f'nothing was written to {dst}. Try again; if it keeps failing, the file at that URL '
            f'has changed. {_by_hand(url, dst)}')
    if validate is not None:
        try:
            validate(tmp)
        except CheckpointError as exc:
            _remove(tmp)
            reason = str(exc).replace(repr(tmp), 'it').replace(tmp, 'it')
            raise CheckpointError(f'The file downloaded from {url} is not the checkpoint wanted, '
                                  f'so it was not kept in the cache ({dst}): {reason}') from None
        except BaseException:
            _remove(tmp)
            raise
    try:
        os.chmod(tmp, normal_mode())
        os.replace(tmp, dst)
    except OSError as exc:
        _remove(tmp)
        raise CheckpointError(f'Cannot place the download at {dst} ({exc.strerror or exc}; '
                              f'{os_error_hint(exc)}).') from None
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


def resolve_checkpoint(checkpoint, validate=None, deadline=None):
    """The local file for a path or URL, downloading a URL into the cache the first time
    (``validate``, ``deadline``: see :func:`download`)."""
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
    return download(url, dst, sha256=expected, validate=validate, deadline=deadline)
