"""What the running torch offers for inference: tracing state, autocast, bf16, fused oneDNN ops.

The fused oneDNN kernels (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise`` and
their ``binary`` overloads, the ones ``torch.compile`` fuses to) are private torch ops. They are
used only after :func:`onednn_fused` has found them, called them on small inputs and seen the
plain ops' results (once per process and dtype); everywhere else :mod:`mmext.models.onednn` runs
the plain ops. The adapters below are the only code that knows the ops' positional signatures.
"""
import functools

import torch
import torch.nn.functional as F


def _version(text):
    """``'2.1.2+cu121'`` -> ``(2, 1)``."""
    parts = []
    for piece in text.split('.')[:2]:
        digits = ''
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        parts.append(int(digits or 0))
    return tuple(parts)


#: ``(major, minor)`` of the running torch
TORCH_VERSION = _version(torch.__version__)


def is_compiling():
    """Whether ``torch.compile`` (dynamo) is tracing the code (``False`` on torch without it)."""
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):  # torch >= 2.3
        return compiler.is_compiling()
    dynamo = getattr(torch, '_dynamo', None)
    fn = getattr(dynamo, 'is_compiling', None) if dynamo is not None else None
    return bool(fn()) if fn is not None else False


def cpu_autocast_dtype():
    """The dtype CPU autocast casts to when it is enabled, else ``None``."""
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        enabled = torch.is_autocast_enabled('cpu')
        return torch.get_autocast_dtype('cpu') if enabled else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def native_bf16(device='cpu'):
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bf16, or a CPU where oneDNN
    reports bf16 support (AVX512-BF16 or AMX); elsewhere torch would emulate it."""
    if device == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---------------------------------------------------------------------------------- adapters
_ATTRS = {'none': ([], ''), 'relu': ([], ''), 'gelu': ([None], 'none')}


def mkldnn_conv(x, weight, bias, padding, stride, dilation, groups, attr):
    """``attr(conv2d(x))`` for ``attr`` in ``'none' | 'relu' | 'gelu'`` (exact GELU)."""
    scalars, algorithm = _ATTRS[attr]
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation,
                                                   groups, attr, scalars, algorithm)


def mkldnn_conv_add(x, residual, weight, bias, padding, stride, dilation, groups):
    """``residual + conv2d(x)`` with the sum as the convolution's post-op."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, weight, bias, padding, stride, dilation, groups, 'add', None, None, [], None)


def mkldnn_linear(x, weight, bias, attr):
    """``attr(linear(x))`` for ``attr`` in ``'none' | 'relu' | 'gelu'``."""
    scalars, algorithm = _ATTRS[attr]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, scalars, algorithm)


def mkldnn_linear_add(x, residual, weight, bias):
    """``residual + linear(x)`` with the sum as the matmul's post-op (``x`` contiguous)."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, 'add')


# ------------------------------------------------------------------------------------ probe
def _probe_cases(dtype):
    """``(name, fused(), plain())`` pairs on small inputs, covering every adapter."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    x, w, b = rand(2, 8, 7, 5), rand(8, 8, 3, 3), rand(8)
    res = rand(2, 8, 7, 5)
    xl, res_l = x.contiguous(memory_format=torch.channels_last), \
        res.contiguous(memory_format=torch.channels_last)
    dw = rand(8, 1, 3, 3)
    t, lw, lb, lres = rand(3, 5, 8), rand(6, 8), rand(6), rand(3, 5, 6)
    conv = functools.partial(F.conv2d, padding=1)
    return [
        ('conv+gelu', lambda: mkldnn_conv(x, w, b, [1, 1], [1, 1], [1, 1], 1, 'gelu'),
         lambda: F.gelu(conv(x, w, b))),
        ('conv+relu (depthwise)', lambda: mkldnn_conv(x, dw, b, [1, 1], [1, 1], [1, 1], 8, 'relu'),
         lambda: F.relu(conv(x, dw, b, groups=8))),
        ('conv+add', lambda: mkldnn_conv_add(x, res, w, b, [1, 1], [1, 1], [1, 1], 1),
         lambda: res + conv(x, w, b)),
        ('conv+add channels_last', lambda: mkldnn_conv_add(xl, res_l, w, b, [1, 1], [1, 1],
                                                           [1, 1], 1),
         lambda: res + conv(x, w, b)),
        ('linear+gelu', lambda: mkldnn_linear(t, lw, lb, 'gelu'), lambda: F.gelu(F.linear(t, lw, lb))),
        ('linear', lambda: mkldnn_linear(t, lw, None, 'none'), lambda: F.linear(t, lw)),
        ('linear+add', lambda: mkldnn_linear_add(t, lres, lw, lb),
         lambda: lres + F.linear(t, lw, lb)),
    ]


@functools.lru_cache(maxsize=None)
def _probe(dtype):
    if not torch.backends.mkldnn.is_available():
        return 'torch was built without oneDNN (mkldnn)'
    if dtype == torch.bfloat16 and not native_bf16('cpu'):
        return 'this CPU has no native bf16'
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    with torch.no_grad():
        for name, fused, plain in _probe_cases(dtype):
            try:
                out = fused()
            except Exception as exc:  # a missing op, another signature, an unsupported case
                return f'{name}: {type(exc).__name__}: {" ".join(str(exc).split())[:200]}'
            ref = plain().float()
            if out.shape != ref.shape:
                return f'{name}: shape {tuple(out.shape)} instead of {tuple(ref.shape)}'
            err = ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
            if not err <= tol:
                return f'{name}: differs from the plain ops (max rel err {err:.2e})'
    return None


def onednn_status(dtype=torch.float32):
    """``None`` when the fused oneDNN ops are usable for ``dtype`` on the CPU, else why not."""
    if dtype not in (torch.float32, torch.bfloat16):
        return f'no fused oneDNN ops for {dtype}'
    return _probe(dtype)


def onednn_fused(dtype=torch.float32):
    """Whether the fused oneDNN ops exist and agree with the plain ops for ``dtype``
    (float32 or bfloat16) in this process."""
    return onednn_status(dtype) is None
