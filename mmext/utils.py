"""Small helpers that several mmext packages share (one definition each)."""
import contextlib
import io
import logging

import torch

from mmext.compat import is_compiling


@contextlib.contextmanager
def quiet(logger, stdout=False):
    """Within the block ``logger`` (a ``logging.Logger``) passes errors only, and with
    ``stdout`` what is printed is dropped (libraries that print summaries or progress bars)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if stdout else contextlib.nullcontext():
            yield
    finally:
        logger.setLevel(level)


def is_tracing():
    """Whether the forward is being traced, scripted, exported to ONNX or compiled."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or is_compiling())


def is_remote(path):
    """Whether ``path`` is a URL (``scheme://...``) rather than a local file."""
    return '://' in str(path)


def output_list(out):
    """A model's outputs as a list of tensors (a tensor, a tuple/list, or a dict's values)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def max_rel_err(ref, out):
    """Largest ``max|ref - out| / max|ref|`` over paired outputs, in float64 on the CPU.

    ``ref`` and ``out`` are tensors, numpy arrays or sequences of them; a shape mismatch or a
    different number of outputs gives ``inf``; no outputs give ``None``.
    """
    refs, outs = _as_tensors(ref), _as_tensors(out)
    if len(refs) != len(outs):
        return float('inf')
    errs = []
    for a, b in zip(refs, outs):
        if a.shape != b.shape:
            return float('inf')
        errs.append(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
    return max(errs) if errs else None


def _as_tensors(values):
    if isinstance(values, dict):
        values = list(values.values())
    if not isinstance(values, (list, tuple)):
        values = [values]
    return [torch.as_tensor(v).detach().cpu().double() for v in values]


def unwrap_model(model):
    """The model inside mmengine's / torch's distributed wrappers (``.module``), else itself."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def error_line(exc, limit=300):
    """``'<Type>: <message>'`` of an exception on one line (whitespace collapsed, at most
    ``limit`` characters of message): how benchmark rows and ONNX checks report a failure."""
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text[:limit]}'
