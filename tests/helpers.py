"""Small utilities the tests share (not fixtures: plain functions)."""
import importlib.util
import math
import os.path as osp

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmext.utils import max_rel_err


@torch.no_grad()
def randomize_norms(model, seed=0, random_eps=False):
    """Give every BatchNorm/GroupNorm/LayerNorm non-trivial affine params and running stats.

    BatchNorms get running variances in 1e-5..1e-4, of the order of their eps (1e-5, or drawn in
    1e-5..1e-3 with ``random_eps``; eps is not saved in checkpoints), so a fold that forgets eps
    is far off; gamma is scaled by ``sqrt(var + eps)`` to keep their outputs O(1).

    Freshly built models have BN gamma 0 on residual branches and identity running stats, which
    would hide mistakes in loading or folding.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (_BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if getattr(m, 'weight', None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if isinstance(m, _BatchNorm):
            if random_eps:
                m.eps = float(10 ** (torch.rand((), generator=g) * 2 - 5))  # 1e-5 .. 1e-3
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(10 ** (torch.rand(m.running_var.shape, generator=g) - 5))
            if m.weight is not None:
                m.weight.mul_((m.running_var + m.eps).sqrt())
    return model


@torch.no_grad()
def randomize_tables(model, seed=0):
    """Attention-bias tables ~ N(0, 1) and layer scales (``gamma``) in 0.1..0.6, far from their
    init (0 and 1e-5 would hide any mistake in the branches they scale)."""
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if name.endswith('attention_biases'):
            p.copy_(torch.randn(p.shape, generator=g))
        elif name.endswith('gamma'):
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
    return model


def max_rel_error(ref, out):
    """Largest ``max|ref - out| / max|ref|`` over paired tensors (mmext's one definition)."""
    return max_rel_err(list(ref), list(out))


def load_tool(name):
    """``tools/<name>.py`` imported as a module (to call its ``main`` in-process)."""
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  osp.join(root, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_error(capsys, tool, argv):
    """Run ``tools/<tool>.py argv`` as the command line does; return its one error line (exit
    code 2, one ``error: ...`` line on stderr)."""
    import pytest

    from mmext.errors import run_cli
    with pytest.raises(SystemExit) as exc:
        run_cli(load_tool(tool).main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    return err


def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution weights of the 4 taps around a point at fraction ``t``."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_reference(grid, size):
    """``(C, h, w)`` -> ``(C, H, W)`` float64: bicubic resampling written out independently of
    torch's kernel (cubic convolution with a = -0.75, align_corners=False: output pixel ``i``
    samples source ``(i + 0.5) * h / H - 0.5``, taps beyond the border repeat the edge), as
    ``F.interpolate(mode='bicubic', align_corners=False)`` is documented to compute."""
    grid = grid.detach().double()
    _, h, w = grid.shape

    def taps(out_len, in_len):
        rows = []
        for i in range(out_len):
            src = (i + 0.5) * in_len / out_len - 0.5
            base = math.floor(src)
            rows.append([(min(max(base - 1 + k, 0), in_len - 1), wt)
                         for k, wt in enumerate(_cubic_weights(src - base))])
        return rows

    out = torch.zeros(grid.shape[0], *size, dtype=torch.float64)
    for i, ys in enumerate(taps(size[0], h)):
        for j, xs in enumerate(taps(size[1], w)):
            out[:, i, j] = sum(wy * wx * grid[:, y, x] for y, wy in ys for x, wx in xs)
    return out
