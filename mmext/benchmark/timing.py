"""Timing: warm-up then timed runs, interleaved rounds across cases, one-call latency.

Each timed run is timed alone (CUDA events on the GPU, ``time.perf_counter`` on the CPU), in
milliseconds. :func:`time_cases` lets prepared cases take turns in ``rounds`` so that a shared
machine's slow drift hits every case alike.
"""
import statistics
import time

import torch

from mmext.deploy.runners import cudnn_benchmark, make_runner, threads_context
from mmext.utils import error_line


def time_runner(run, device, warmup, iters):
    """Milliseconds of each of ``iters`` runs of ``run()`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        run()
    times = []
    if device == 'cuda':
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(iters):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def measure_latency(model, input_shape=(1, 3, 224, 224), mode='deploy', warmup=5, iters=20,
                    threads=1):
    """Median CPU forward time of ``model`` on a random input in ``mode``, in milliseconds.

    The caller's model is not changed (see :func:`make_runner`); ``threads`` is the torch (and
    ONNX Runtime) thread count during the measurement.
    """
    x = torch.randn(*input_shape)
    with threads_context(threads):
        runner = make_runner(model, mode, x, threads=threads)
        try:
            return statistics.median(time_runner(runner.run, 'cpu', warmup, iters))
        finally:
            runner.close()


def fill_times(row, times):
    med = statistics.median(times)
    row.update(median_ms=round(med, 4), min_ms=round(min(times), 4), max_ms=round(max(times), 4),
               img_per_s=round(row['batch'] * 1000.0 / med, 2) if med > 0 else None,
               times_ms=[round(t, 3) for t in times])


def failure_status(exc):
    """A row's ``status`` for a case that raised ``exc``."""
    return f'failed: {error_line(exc)}'


def time_cases(cases, protocol, settings, rounds=1):
    """Time prepared ``(row, runner)`` pairs and fill their rows; closes the runners.

    With ``rounds > 1`` the cases take turns: each round times every case for ``iters`` runs
    (after ``warmup`` runs in the first round and one in later ones), and a row's figures pool
    all its rounds. A slow drift of a shared machine then hits every mode alike instead of
    whichever was timed last.
    """
    device = protocol.device
    rounds = max(int(rounds), 1)
    times = [[] for _ in cases]
    live = [runner is not None for _, runner in cases]
    try:
        for r in range(rounds):
            for i, (row, runner) in enumerate(cases):
                if not live[i]:
                    continue
                try:
                    with threads_context(settings['threads']), cudnn_benchmark(device):
                        times[i] += time_runner(runner.run, device,
                                                settings['warmup'] if r == 0 else 1,
                                                settings['iters'])
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    row['status'] = failure_status(exc)
                    live[i] = False
        for i, (row, runner) in enumerate(cases):
            if live[i]:
                fill_times(row, times[i])
                row.update(runner.info, rounds=rounds)
    finally:
        for _, runner in cases:
            if runner is not None:
                runner.close()
        free_cuda()
    return [row for row, _ in cases]


def free_cuda():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
