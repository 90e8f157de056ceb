"""Analysis: parameters and MACs (:mod:`.complexity`, :mod:`.flops`), result summaries and
plots (:mod:`.summarize`)."""
from mmext.analysis.complexity import count_macs, count_params, sdpa_flop_jit

__all__ = ['count_macs', 'count_params', 'sdpa_flop_jit']
