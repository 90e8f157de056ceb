"""Faster stand-ins for layers whose CPU kernels fall to slow paths, for models used as built.

EdgeViT's ``switch_to_deploy()`` already avoids the transposed conv (local propagation folded with
its norm and projection, see ``GlobalSparseAttention._propagate_project``), so the runners'
deploy-based modes need no swap;
:func:`swap_slow_layers` remains for unfused models (``engine.precision.Bf16Module`` applies it
to its copy; on a deployed EdgeViT it is harmless, the attention reads either weight layout).

:func:`swap_slow_layers` replaces, in place:

- a depthwise ``ConvTranspose2d`` whose kernel equals its stride (no overlap, no padding: EdgeViT's
  local propagation) by :class:`WindowSpread`: each input pixel times the ``r x r`` kernel of
  its channel, written as one broadcast product and a reshape. torch's CPU transposed
  convolution has no oneDNN path for depthwise groups and runs a slow im2col loop (EdgeViT-XXS
  b16 at 224 in bf16: about a quarter of the time, profiled with torch.profiler).

The stand-ins compute the same function (tested against the layer they replace).
"""
import torch
from torch import nn


class WindowSpread(nn.Module):
    """``ConvTranspose2d(C, C, r, stride=r, groups=C)`` as ``x[..., None] * w`` + bias."""

    def __init__(self, deconv):
        super().__init__()
        c = deconv.in_channels
        r = deconv.kernel_size
        self.r = r
        self.weight = nn.Parameter(deconv.weight.detach().reshape(1, c, 1, r[0], 1, r[1]).clone(),
                                   requires_grad=False)
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(c)
        self.bias = nn.Parameter(bias.reshape(1, c, 1, 1).clone(), requires_grad=False)

    def forward(self, x, output_size=None):
        n, c, h, w = x.shape
        out = (x[:, :, :, None, :, None] * self.weight).reshape(n, c, h * self.r[0],
                                                                w * self.r[1])
        return out + self.bias


def is_window_spread(m):
    return (type(m) is nn.ConvTranspose2d and m.groups == m.in_channels == m.out_channels
            and tuple(m.kernel_size) == tuple(m.stride) and tuple(m.padding) == (0, 0)
            and tuple(m.output_padding) == (0, 0) and tuple(m.dilation) == (1, 1))


def swap_slow_layers(model):
    """Replace the slow layers of ``model`` (see the module docstring); returns how many."""
    swaps = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if is_window_spread(child):
                swaps.append((module, child_name, child))
    for parent, name, child in swaps:
        setattr(parent, name, WindowSpread(child).to(child.weight.device, child.weight.dtype))
    return len(swaps)
