"""Analysis: parameters and MACs (:mod:`mmext.benchmark.complexity`, :mod:`.flops`), result summaries and
plots (:mod:`.summarize`)."""
from mmext.benchmark.complexity import count_macs, count_params, sdpa_flop_jit

__all__ = ['count_macs', 'count_params', 'sdpa_flop_jit']
