"""The one place that knows what the running torch (2.0 ... 2.13+) and mmengine 0.10 offer.

Nothing else in mmext tests ``torch.__version__`` or looks for a private torch API: it asks here.

* :mod:`mmext.compat.torch_ops`: tracing/compiling state, the CPU autocast dtype, native bf16,
  and whether the fused oneDNN kernels (``torch.ops.mkldnn._*_pointwise``) exist and give the plain
  ops' results (probed once per process and dtype), with the adapters that call them.
* :mod:`mmext.compat.checkpoint`: weights-only loading with one allow-list of mmengine's
  checkpoint types, through ``torch.load(weights_only=True)`` + ``add_safe_globals`` on
  torch >= 2.6 and through a restricted unpickler on older torch.
* :mod:`mmext.compat.mmengine`: mmengine's local-file checkpoint loader made weights-only, and
  its metafile parsing done once, both scoped to mmext's own entry points (context managers).

``import mmext`` only registers the allow-list with torch (torch >= 2.6, where
``torch.load`` is weights-only by default and mmengine's checkpoints need it); ``MMEXT_NO_PATCH=1``
turns that and the scoped mmengine changes off.
"""
from mmext.compat.checkpoint import (allow_mmengine_globals, load_weights_only,
                                     mmengine_safe_globals, patching_disabled,
                                     restricted_load, safe_globals_supported)
from mmext.compat.mmengine_patches import cached_config_metainfo, weights_only_checkpoints
from mmext.compat.torch_ops import (TORCH_VERSION, cpu_autocast_dtype, is_compiling, native_bf16,
                                    onednn_fused, onednn_status)

__all__ = ['TORCH_VERSION', 'is_compiling', 'cpu_autocast_dtype', 'native_bf16', 'onednn_fused',
           'onednn_status', 'load_weights_only', 'restricted_load', 'mmengine_safe_globals',
           'allow_mmengine_globals', 'safe_globals_supported', 'patching_disabled',
           'weights_only_checkpoints', 'cached_config_metainfo', 'install']

_installed = False


def install():
    """What ``import mmext`` does here: register the allow-list where torch takes it."""
    global _installed
    if _installed:
        return
    _installed = True
    if not patching_disabled() and safe_globals_supported():
        allow_mmengine_globals()
