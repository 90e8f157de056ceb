"""Attention pieces more than one family uses.

* :data:`ATTN_IMPLS` / :func:`use_sdpa`: ``attn_impl`` = SDPA or the written-out softmax attention;
* :func:`attention_with_bias`: LeViT-style attention with an additive bias;
* :func:`softmax_` / :func:`gelu_`: in place on a fresh temporary when nothing needs the input
  (inference, not tracing): at detection sizes the score maps are the largest tensors, and a new
  output means one more pass over memory and, with glibc's defaults, freshly faulted pages
  (softmax of 8 x 1050 x 1050 bf16 scores, one thread: 5.6 ms in place, 13.2 ms into a new tensor);
* :class:`AttentionBiasTable`: a learned ``(|dy|, |dx|)`` offset-bias table resized to any grid,
  with an inference cache kept valid by :class:`SourceStamp` (also EdgeViT's deploy fold).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmext.errors import ConfigError
from mmext.utils import is_tracing

#: values of ``attn_impl``: ``'auto'`` (SDPA on CUDA, the explicit formula elsewhere), ``'sdpa'``
#: (always ``F.scaled_dot_product_attention``), ``'explicit'`` (always the written-out formula).
ATTN_IMPLS = ('auto', 'sdpa', 'explicit')


def check_attn_impl(value, owner='attention'):
    """Return ``value`` if it is one of :data:`ATTN_IMPLS`, else raise :class:`ConfigError`."""
    if value not in ATTN_IMPLS:
        raise ConfigError(f'{owner}: attn_impl={value!r} is not one of {list(ATTN_IMPLS)}.')
    return value


def use_sdpa(attn_impl, x):
    """Whether ``attn_impl`` picks ``F.scaled_dot_product_attention`` for tensor ``x``."""
    return attn_impl == 'sdpa' or (attn_impl == 'auto' and x.is_cuda)


def attention_with_bias(q, k, v, bias, scale, attn_impl='auto'):
    """``softmax(q k^T * scale + bias) v`` for LeViT-style attention with learned biases.

    Shapes: ``q (N, heads, Lq, d)``, ``k (N, heads, Lk, d)``, ``v (N, heads, Lk, dv)``,
    ``bias (heads, Lq, Lk)`` ``-> (N, heads, Lq, dv)``.

    ``attn_impl`` (see :data:`ATTN_IMPLS`): SDPA is one fused kernel on CUDA; on the CPU the
    explicit formula is faster (torch's CPU SDPA with a float mask runs its math path plus a
    fully-masked-row check over every score: about 0.4 s of 2.9 s for EfficientFormerV2-S0 at
    800x1344 on one thread). Both give the same result up to float rounding.
    """
    if use_sdpa(attn_impl, q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)
    # scale the (small) queries rather than the scores, add the bias and take the softmax in
    # place: at detection sizes the score tensor is the largest one here and every extra pass
    # over it shows
    return softmax_(((q * scale) @ k.transpose(-2, -1)).add_(bias)) @ v


def inplace_ok(x):
    """Whether an op may overwrite ``x`` (a temporary the caller made): nothing will need it
    for a backward pass, and no tracer records the call (out= variants do not export)."""
    return not (is_tracing() or (torch.is_grad_enabled() and x.requires_grad))


def softmax_(x, dim=-1):
    """``x.softmax(dim)``, written over ``x`` where :func:`inplace_ok` (same values)."""
    if inplace_ok(x):
        return torch.softmax(x, dim, out=x)
    return x.softmax(dim)


def gelu_(x):
    """``F.gelu(x)`` (exact), written over ``x`` where :func:`inplace_ok` (same values).

    A channels-last map is handed to the kernel as its NHWC view (the same memory, contiguous):
    on the 4-D NCHW-strided view torch's CPU GELU takes a slow path whose cost depends on the
    values -- 19 ms instead of 3.6 ms for EfficientFormerV2-S0's 1024 x 50 x 84 bf16 map before
    ``proj`` at 800x1344 (one thread), with as much as 40% of the values beyond +-5.
    """
    nhwc = (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))
    t = x.permute(0, 2, 3, 1) if nhwc else x
    if inplace_ok(x):
        torch.ops.aten.gelu_(t)
        return x
    t = F.gelu(t)
    return t.permute(0, 3, 1, 2) if nhwc else t


def resize_bias_table(table, resolution, size):
    """Resize an offset-bias table from a ``resolution x resolution`` grid to ``size``.

    Args:
        table (Tensor): ``(heads, resolution**2)``, entry ``|dy| * resolution + |dx|``.
        resolution (int): side of the grid the table was learned on.
        size (tuple[int, int]): ``(H, W)`` of the offsets needed now.

    Returns:
        Tensor: ``(heads, H * W)``, entry ``|dy| * W + |dx|``; ``table`` itself when the size
        matches. Bicubic, ``align_corners=False``, computed in float32.
    """
    if not torch.jit.is_tracing() and tuple(int(s) for s in size) == (resolution, resolution):
        return table
    # When tracing (ONNX export) the sizes stay traced values, so the graph works at any size;
    # resizing to the same size is exact (every tap lands on a source entry, weights 0/1).
    heads = table.shape[0]
    grid = table.float().reshape(1, heads, resolution, resolution)
    grid = F.interpolate(grid, size=tuple(size), mode='bicubic', align_corners=False)
    return grid.reshape(heads, -1).to(table.dtype)


def _offsets(num_queries, num_keys, q_stride, device):
    """``(num_queries, num_keys)`` distances ``|i * q_stride - j|`` along one axis."""
    queries = torch.arange(num_queries, device=device) * q_stride
    return (queries[:, None] - torch.arange(num_keys, device=device)[None, :]).abs()


_optimizer_steps = 0  # optimizer steps taken in this process (fused ones included)


def _count_optimizer_step(optimizer, args, kwargs):
    global _optimizer_steps
    _optimizer_steps += 1


try:  # torch >= 2.0
    from torch.optim.optimizer import register_optimizer_step_post_hook
    register_optimizer_step_post_hook(_count_optimizer_step)
except ImportError:
    pass


def caching_ok(sources):
    """Whether values derived from the tensors ``sources`` may be cached: no gradient needs to
    reach a source, nothing is being traced, scripted, exported or compiled, and no source is an
    inference tensor (those keep no version counter)."""
    return not (is_tracing() or (torch.is_grad_enabled() and any(t.requires_grad for t in sources))
                or any(t.is_inference() for t in sources))


class SourceStamp:
    """Tells, without reading them, whether tensors may have changed since the stamp was taken.

    A stamp holds the tensors (their identity: a new ``nn.Parameter`` differs), a detached view
    of each (so its memory stays allocated and cannot come back at the same address), each one's
    ``data_ptr()`` and version counter (bumped by every in-place write through the tensor or its
    views: ``param.add_``, ``load_state_dict``, foreach optimizers; a new tensor assigned to
    ``.data`` has another address), and the count of optimizer steps taken in the process (fused
    optimizers write without bumping version counters). Comparing is a few ints per tensor:
    no host sync on CUDA. Not seen: writes into ``param.data`` (its own version counter) --
    ``train()``/``eval()`` or ``load_state_dict`` empty a :class:`DerivedCache`.
    """

    __slots__ = ('tensors', 'views', 'marks')

    def __init__(self, tensors):
        self.tensors = tuple(tensors)
        self.views = tuple(t.detach() for t in self.tensors)
        self.marks = self._marks(self.tensors)

    @staticmethod
    def _marks(tensors):
        return (_optimizer_steps, ) + tuple((t.data_ptr(), t._version) for t in tensors)

    def matches(self, tensors):
        """Whether ``tensors`` are the stamped ones, unchanged."""
        return (len(tensors) == len(self.tensors)
                and all(a is b for a, b in zip(tensors, self.tensors))
                and self._marks(tensors) == self.marks)


class DerivedCache(nn.Module):
    """Base of modules that cache values derived from their parameters in the containers named
    by ``cache_attrs`` (each entry with a :class:`SourceStamp`). The containers are emptied by
    ``train()``/``eval()``, ``load_state_dict`` and ``.to()``/``.cuda()``/``.half()``, and are
    never pickled, deep-copied or saved (a copy starts empty)."""

    cache_attrs = ()

    def clear_caches(self):
        for name in self.cache_attrs:
            self.__dict__[name].clear()

    def train(self, mode=True):
        self.clear_caches()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_caches()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_caches()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), '__getstate__') else self.__dict__
        return dict(state, **{name: type(state[name])() for name in self.cache_attrs})


class AttentionBiasTable(DerivedCache):
    """Base class of attentions with a learned ``(|dy|, |dx|)`` offset-bias table (LeViT style).

    Holds the parameter ``attention_biases`` of shape ``(num_heads, resolution**2)`` (the
    authors' and timm's name and shape; their ``attention_bias_idxs`` index buffers are not
    kept: the offsets are recomputed for each grid). :meth:`attention_bias` returns the
    ``(num_heads, N_q, N_k)`` bias for any grid: the table resized to the key grid by
    :func:`resize_bias_table`, read at each query/key pair's offset. Query ``(i, j)`` sits at key
    position ``(i * q_stride, j * q_stride)``, so its offset to key ``(y, x)`` is
    ``(|i*s - y|, |j*s - x|)``; this needs ``(H_q - 1) * s < H_k``, e.g. ``H_q = ceil(H_k / s)``.

    Caching: in training mode, whenever gradients must reach a source, or while tracing,
    exporting or compiling (see :func:`caching_ok`), the bias is computed on each call. Otherwise it
    is cached per ``(q_size, k_size, q_stride, dtype, device)`` with a :class:`SourceStamp` of
    the tensors it came from (:meth:`_bias_sources`) and used while the stamp matches: an
    optimizer step, ``load_state_dict``, ``param.add_()``, ``param.data = t`` or a new parameter
    make it compute again, at the cost of a few int comparisons per call (no tensor is read).
    The cache is emptied as :class:`DerivedCache` says. At most
    :attr:`bias_cache_size` grids are kept per module (a bias takes ``heads * N_q * N_k``
    elements, ~35 MB for 8 heads on an 800x1344 image at stride 32).
    """

    bias_cache_size = 2
    cache_attrs = ('_bias_cache', )

    def __init__(self, num_heads, resolution):
        super().__init__()
        self.resolution = resolution
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self._bias_cache = OrderedDict()

    def _bias_sources(self):
        """The tensors :meth:`_compute_bias` reads (a subclass that folds more parameters into
        its bias returns them too): a cached bias is used while their stamp matches."""
        return (self.attention_biases,)

    def _compute_bias(self, q_size, k_size, q_stride):
        (hq, wq), (hk, wk) = q_size, k_size
        table = resize_bias_table(self.attention_biases, self.resolution, k_size)
        table = table.reshape(-1, hk, wk)
        dy = _offsets(hq, hk, q_stride, table.device)
        dx = _offsets(wq, wk, q_stride, table.device)
        bias = table[:, dy][..., dx]  # (heads, H_q, H_k, W_q, W_k), separable: no N_q x N_k index
        return bias.permute(0, 1, 3, 2, 4).reshape(table.shape[0], hq * wq, hk * wk)

    def attention_bias(self, q_size, k_size=None, q_stride=1, dtype=None):
        """The ``(num_heads, H_q * W_q, H_k * W_k)`` additive bias for these grids.

        Args:
            q_size, k_size (tuple[int, int]): query and key grids (``k_size`` defaults to
                ``q_size``).
            q_stride (int): key-grid step between neighbouring queries (1 for self-attention).
            dtype: dtype of the result (that of the attention scores).
        """
        sources = self._bias_sources()
        dtype = dtype or self.attention_biases.dtype
        k_size = q_size if k_size is None else k_size
        if self.training or not caching_ok(sources):
            return self._compute_bias(q_size, k_size, q_stride).to(dtype)
        q_size, k_size = tuple(int(s) for s in q_size), tuple(int(s) for s in k_size)
        key = (q_size, k_size, q_stride, dtype, self.attention_biases.device)
        cached = self._bias_cache.get(key)
        if cached is not None and cached[0].matches(sources):
            self._bias_cache.move_to_end(key)
            return cached[1]
        bias = self._compute_bias(q_size, k_size, q_stride).to(dtype)
        self._bias_cache[key] = (SourceStamp(sources), bias)
        self._bias_cache.move_to_end(key)
        while len(self._bias_cache) > self.bias_cache_size:
            self._bias_cache.popitem(last=False)
        return bias
