"""How close each format of the formats benchmark runs to this CPU's limit.

A detector's multiply-adds at the run's input size (counted by the caller,
:func:`mmext.apis.benchmark_formats.model_gmacs`: backbone, neck and head; priors, decoding and
NMS count none) over the matrix product peak of the row's precision, measured in the same run with the same threads
(:func:`mmext.benchmark.peaks.measure_peaks`: fp32 and bf16 GEMMs in PyTorch, int8 in ONNX
Runtime), give the time at that measured GEMM speed: ``floor_ms = 2 * MACs / peak`` per image (a
runtime's own kernels may beat the PyTorch/ONNX Runtime GEMM a few per cent, so ``of_peak``
slightly above 1 is possible; the floor is a yardstick, not a proof).
``of_peak = floor_ms / inference_ms`` is the fraction of that limit the format reaches (int8 rows
keep the heads' output convs and the decoding float, so their floor is a little optimistic).

A time target well below a model's floor at a precision is out of reach of runtime work at that
precision on this machine; fewer multiply-adds (another model) or a cheaper precision are
needed.
"""
#: row precision -> the peak it is bounded by
PEAK_OF = {'fp32': 'fp32', 'bf16': 'bf16', 'int8': 'int8'}
BOUND_COLUMNS = [('model', 'model'), ('format', 'format'), ('precision', 'precision'),
                 ('gmacs', 'GMACs'), ('floor_ms', 'floor ms'), ('inference_ms', 'inference ms'),
                 ('of_peak', 'of peak')]


def floor_ms(gmacs, peak_gops):
    """ms per image of ``gmacs`` multiply-adds at ``peak_gops`` GFLOP/s (GOP/s)."""
    if not gmacs or not peak_gops:
        return None
    return round(2.0 * gmacs / peak_gops * 1e3, 2)


def fill_bounds(rows, gmacs, peaks):
    """Add ``gmacs``, ``floor_ms`` and ``of_peak`` to every row whose ``config`` has a count in
    ``gmacs`` (``{config: GMACs}``); anchors and uncounted models get ``None``."""
    for row in rows:
        macs = gmacs.get(str(row.get('config')))
        peak = (peaks or {}).get(PEAK_OF.get(row.get('precision'), ''))
        floor = floor_ms(macs, peak)
        ms = row.get('inference_ms')
        row['gmacs'] = macs
        row['floor_ms'] = floor
        row['of_peak'] = round(floor / ms, 3) if floor and ms else None
    return rows
