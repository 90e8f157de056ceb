"""User-facing errors.

Every error a researcher can cause by what they pass in (an unknown arch, bad ``out_indices``, a
checkpoint that does not fit, a dataset that is not where the config says) is raised as a subclass of
:class:`MmextError`, with a message that says what to do. The command-line tools catch these and
print the message without a traceback.
"""


class MmextError(RuntimeError):
    """Base class of mmext's user-facing errors."""


class ConfigError(MmextError, ValueError):
    """A bad argument or config value (unknown arch, bad out_indices, ...)."""


class CheckpointError(MmextError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class DatasetNotFoundError(MmextError, FileNotFoundError):
    """A dataset that is not where the config expects it."""


def _unpickling_reason(exc):
    """The line of torch's weights-only refusal that names the offending type."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    named = [l for l in lines if 'Unsupported' in l or 'GLOBAL' in l]
    return (named or lines or ['unknown'])[0]


def run_cli(main, *args, **kwargs):
    """Run a command-line entry point; print an :class:`MmextError` as ``error: ...`` and exit 2.

    Used by every script in ``tools/`` so user errors read as one message, not a traceback.
    """
    import sys
    try:
        return main(*args, **kwargs)
    except MmextError as exc:
        print(f'error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
