"""Keep freed memory in the process (glibc malloc) so large activations do not fault in new pages.

glibc serves a block above a threshold (128 KiB, rising to at most 32 MiB) with its own
``mmap`` and gives it back with ``munmap`` when freed; freed space at the top of the heap beyond
``M_TRIM_THRESHOLD`` goes back too. The next large tensor then touches fresh pages, and the
kernel zeroes each one on its first touch. In a VM that is slow: on this project's 2-core
container (1 thread) EfficientFormerV2-S0 at 800x1344 ran 732 ms in fp32 deploy mode and 424 ms
in bf16 with glibc's defaults, 499 and 353 ms with freed memory kept (one interleaved run).
Models with many large intermediates gain most (the authors' EdgeViT-XXS b16@224: 290 -> 257 ms;
mmext's deploy graph of it, which allocates less, not measurably).

:func:`retain_freed_memory` makes glibc keep everything it frees (``M_MMAP_MAX = 0``: no
private mappings; ``M_TRIM_THRESHOLD`` at its maximum: no trimming): the process keeps its peak
footprint and reuses it. It is process-wide and one-way, for an inference or benchmark process;
``tools/benchmark_backbone.py --malloc retain`` applies it and records it in the results. For
any process, without code: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=
4294967295``. jemalloc or tcmalloc through ``LD_PRELOAD`` (Intel's CPU tuning advice) reuse
memory in a similar way.
"""
import ctypes
import ctypes.util
import os
import platform

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_state = {'retained': False}


def _glibc():
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    return libc if hasattr(libc, 'mallopt') else None


def retain_freed_memory():
    """Make glibc keep freed memory for reuse (see the module docstring).

    Returns ``(applied, reason)``: ``(True, None)`` once applied (also on later calls),
    ``(False, why)`` where the C library is not glibc or refuses a setting.
    """
    if _state['retained']:
        return True, None
    libc = _glibc()
    if libc is None:
        return False, f'the C library here is not glibc ({platform.libc_ver()[0] or "unknown"})'
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not libc.mallopt(M_MMAP_MAX, 0):
        return False, 'glibc refused mallopt(M_MMAP_MAX, 0)'
    if not libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1):
        return False, 'glibc refused mallopt(M_TRIM_THRESHOLD, 2**31 - 1)'
    _state['retained'] = True
    return True, None


def malloc_setting():
    """``'retain'`` after :func:`retain_freed_memory` in this process, else ``'system'`` (with
    ``GLIBC_TUNABLES`` appended when that variable is set: it changes the defaults too)."""
    if _state['retained']:
        return 'retain'
    tunables = os.environ.get('GLIBC_TUNABLES')
    return f'system (GLIBC_TUNABLES={tunables})' if tunables else 'system'
