"""User-facing errors.

Every error a researcher can cause by what they pass in (an unknown arch, bad ``out_indices``, a
checkpoint that does not fit, a dataset that is not where the config says) is raised as a subclass of
:class:`MmextError`, with a message that says what to do. The command-line tools catch these and
print the message without a traceback (``--debug`` or ``MMEXT_DEBUG=1`` shows it).
"""
import errno
import os
import sys
import traceback

DEBUG_FLAG = '--debug'
DEBUG_ENV = 'MMEXT_DEBUG'


class MmextError(RuntimeError):
    """Base class of mmext's user-facing errors."""


class ConfigError(MmextError, ValueError):
    """A bad argument or config value (unknown arch, bad out_indices, ...)."""


class CheckpointError(MmextError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class FusedCheckpointError(CheckpointError):
    """A checkpoint saved after ``switch_to_deploy()`` offered to an unfused backbone."""


class DatasetNotFoundError(MmextError, FileNotFoundError):
    """A dataset that is not where the config expects it."""


class WorkDirBusyError(MmextError):
    """A work dir that another live run holds (see :mod:`mmext.engine.workdir_lock`)."""


class OutputError(MmextError):
    """An output mmext cannot write (read-only, full, not a folder) or will not write (it
    exists and ``--force`` was not given, or it is one of the inputs)."""


class ArgumentError(ConfigError, TypeError):
    """An argument of a public function with the wrong type (see :mod:`mmext.apis`)."""


#: errno values that mean "this path cannot be written": reported in one line by run_cli
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                errno.EFBIG, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def os_error_hint(exc):
    """What to do about an OSError of writing a file, in a few words."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return 'the disk is full or a file-size/quota limit is reached: free space or write to ' \
            'another disk'
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 'the path is read-only or not yours: check its permissions or choose another path'
    if exc.errno in (errno.ENOTDIR, errno.EISDIR):
        return 'part of the path is a file where a folder is needed (or the reverse): choose ' \
            'another path'
    return 'choose another path'


def _unpickling_reason(exc):
    """The line of torch's weights-only refusal that names the offending type."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    named = [l for l in lines if 'Unsupported' in l or 'GLOBAL' in l]
    return (named or lines or ['unknown'])[0]


def debug_requested(argv=None):
    """Whether ``--debug`` is in ``argv`` (default ``sys.argv``) or ``MMEXT_DEBUG`` is set."""
    if os.environ.get(DEBUG_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on'):
        return True
    return DEBUG_FLAG in (sys.argv[1:] if argv is None else argv)


def _strip_debug(argv):
    return [a for a in argv if a != DEBUG_FLAG]


def run_cli(main, *args, **kwargs):
    """Run a command-line entry point; print an :class:`MmextError` as ``error: ...`` and exit 2.

    Used by every script in ``tools/`` so user errors read as one message, not a traceback.
    ``--debug`` anywhere on the command line (it is taken out before ``main`` parses the
    arguments, so every tool accepts it) or ``MMEXT_DEBUG=1`` prints the full traceback first.
    ``main`` gets ``args``/``kwargs`` as given; a list as first argument is an argv and loses
    ``--debug`` too. An ``OSError`` of a path that cannot be written (read-only, full disk, a
    file where a folder should be: :data:`WRITE_ERRNOS`) is one line too, naming the path, as
    is an ``OSError`` without an errno (a library's message, e.g. mmengine's about a config
    file's type); Ctrl-C is ``error: interrupted`` (exit 130).
    """
    debug = debug_requested()
    if DEBUG_FLAG in sys.argv[1:]:
        sys.argv[1:] = _strip_debug(sys.argv[1:])
    if args and isinstance(args[0], (list, tuple)):
        debug = debug or DEBUG_FLAG in args[0]
        args = (_strip_debug(args[0]),) + args[1:]
    try:
        return main(*args, **kwargs)
    except MmextError as exc:
        _fail(f'error: {exc}', debug)
    except OSError as exc:
        if exc.errno is None:  # a library's message about a file (mmengine: a config's type)
            _fail(f'error: {exc}', debug)
        if exc.errno not in WRITE_ERRNOS:  # e.g. a missing file mmext did not check: a bug
            raise
        # writing somewhere the disk or the permissions do not allow
        where = f'{exc.filename}: ' if exc.filename else ''
        _fail(f'error: {where}{exc.strerror or exc}; {os_error_hint(exc)}.', debug)
    except KeyboardInterrupt:
        _fail('error: interrupted (Ctrl-C).', debug, code=130)


def _fail(line, debug, code=2):
    if debug:
        traceback.print_exc()
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(code) from None
