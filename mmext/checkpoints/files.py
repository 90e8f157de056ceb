"""Writing outputs safely: a complete file or none, never over an input, never over an existing
file unless asked, with the permissions any file the user creates gets (their umask).

Every checkpoint, export and result file mmext's tools write goes through :func:`atomic_write`:
the content goes to a temporary file in the target's folder, which replaces the target
(``os.replace``, atomic within one file system) only once it is complete and flushed to disk.
A full disk or a read-only folder then leaves the target as it was and no temporary file
behind, and raises one :class:`~mmext.errors.OutputError` naming the path and what to do.
"""
import io
import os
import os.path as osp
import tempfile

from mmext.errors import OutputError, os_error_hint


def normal_mode():
    """The mode a new file gets from ``open()``: ``0o666`` less the umask (0644 under 022).

    ``tempfile.mkstemp`` creates files 0600; files renamed into place get this mode instead.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _reason(exc):
    return f'{exc.strerror or exc}; {os_error_hint(exc)}'


def writable_folder(folder, what='output folder'):
    """Create ``folder`` when needed and check that a file can be created in it (by creating and
    removing one), so a run fails before its work, not when it writes its result."""
    folder = osp.abspath(os.fspath(folder))
    if osp.exists(folder) and not osp.isdir(folder):
        raise OutputError(f'the {what} {folder!r} is a file, not a folder; choose another path.')
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.mmext-write-test.', dir=folder)
        os.close(fd)
        os.remove(probe)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f'cannot create the {what} {folder!r}: part of that path is a file, '
                          'not a folder; choose another path.') from None
    except OSError as exc:
        raise OutputError(f'cannot write into the {what} {folder!r} ({_reason(exc)}).') from None
    return folder


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (links followed); False if either is missing."""
    try:
        return osp.samefile(a, b)
    except (OSError, TypeError, ValueError):
        return False


def check_output_file(path, force=False, inputs=(), what='output', flag='--force'):
    """The absolute path of ``path`` once it is safe to write; else :class:`OutputError`.

    Refused: one of ``inputs`` (even with ``force``: the input would be gone), a folder, an
    existing file unless ``force`` (``flag`` is the option that allows it), and a folder that
    cannot be created or written.
    """
    path = osp.abspath(os.path.expanduser(os.fspath(path)))
    for other in inputs:
        if other and same_file(other, path):
            raise OutputError(f'the {what} {path!r} is the input {os.fspath(other)!r}; write to '
                              'another file (the input would be lost).')
    if osp.isdir(path):
        raise OutputError(f'the {what} {path!r} is a folder; give a file name.')
    if osp.lexists(path) and not force:
        raise OutputError(f'the {what} {path!r} already exists; pass {flag} to replace it, or '
                          'choose another name.')
    writable_folder(osp.dirname(path), f'folder of the {what}')
    return path


def atomic_write(path, write, what='file', binary=True):
    """Write ``path`` through ``write(f)`` (``f``: a temporary file opened ``'wb'``, or ``'w'``
    when not ``binary``), then rename it into place with :func:`normal_mode` permissions.

    Raises:
        OutputError: the folder cannot be written or the disk filled up; ``path`` is as it was
            and no temporary file is left.
    """
    path = osp.abspath(os.fspath(path))
    folder = osp.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.part', dir=folder)
    except OSError as exc:
        raise OutputError(f'cannot write the {what} {path!r}: cannot create a file in '
                          f'{folder!r} ({_reason(exc)}).') from None
    try:
        with os.fdopen(fd, 'wb' if binary else 'w') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, normal_mode())
        os.replace(tmp, path)
    except OSError as exc:
        kept = 'it is unchanged' if osp.lexists(path) else 'nothing was written'
        raise OutputError(f'cannot write the {what} {path!r} ({_reason(exc)}); {kept}.') \
            from None
    finally:
        if osp.lexists(tmp):
            os.remove(tmp)
    return path


def write_text(path, text, what='file'):
    """:func:`atomic_write` of a string."""
    return atomic_write(path, lambda f: f.write(text), what=what, binary=False)


def save_tensors(obj, path, what='checkpoint'):
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write` (serialised in memory first,
    so a failing disk raises ``OSError`` from the write, not torch's zip writer)."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()), what=what)
