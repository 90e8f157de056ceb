"""Model complexity: parameters and multiply-accumulates (MACs), through mmengine's FlopAnalyzer.

mmengine's analyzer traces the model with the JIT and counts convs, linears and matmuls; mmext adds
a handle for ``scaled_dot_product_attention`` (``q @ k^T`` and ``attn @ v``), which mmengine does not
count. Norm layers and interpolation are left out by default: the papers' MACs figures count
convolutions, linear layers and matrix products (SHViT-S1 gives the authors' 0.241 G that way;
with BN it is 0.244 G; EfficientFormerV2's figures leave out its bilinear upsampling).
"""
import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

# Norms and interpolation are no multiply-accumulates of the papers' figures (mmengine counts
# them: BN per element, bilinear upsampling 4 per output element).
_NORM_OPS = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm', 'aten::instance_norm',
             'aten::upsample_nearest2d', 'aten::upsample_bilinear2d', 'aten::upsample_bicubic2d')


def sdpa_flop_jit(inputs, outputs):
    """MACs of ``scaled_dot_product_attention(q, k, v)``: ``L*S*E + L*S*Ev`` per batch and head."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _zero(inputs, outputs):
    return 0


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model, input_shape=(1, 3, 224, 224), count_norms=False):
    """Multiply-accumulates of one forward pass of ``model`` on a zero tensor of ``input_shape``."""
    was_training = model.training
    param = next(model.parameters(), None)
    inputs = torch.zeros(input_shape, device=param.device if param is not None else 'cpu',
                         dtype=param.dtype if param is not None else torch.float32)
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
        if not count_norms:
            analyzer.set_op_handle(**{op: _zero for op in _NORM_OPS})
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total()
    finally:
        model.train(was_training)
