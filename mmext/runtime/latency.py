"""A small CPU latency measurement for backbones (used by the demo)."""
import copy
import statistics
import time

import torch


@torch.inference_mode()
def measure_latency(model, input_shape=(1, 3, 224, 224), warmup=5, iters=20, fuse=True,
                    threads=None):
    """Median forward time of ``model`` on a random input, in milliseconds.

    The model is deep-copied, put in eval mode and (``fuse=True``) switched to deploy mode
    when it has ``switch_to_deploy()``; the caller's model is left as it was.
    """
    model = copy.deepcopy(model).eval().cpu()
    if fuse and hasattr(model, 'switch_to_deploy'):
        model.switch_to_deploy()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        x = torch.randn(*input_shape)
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(old_threads)
    return statistics.median(times)
