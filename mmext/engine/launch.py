"""Launching a run: adapting a GPU config to a CPU-only machine, the process group, the runner."""
import torch
from mmengine.config import ConfigDict


# ------------------------------------------------------------------------------ CPU / launcher
def _replace_syncbn(node):
    """Turn every ``type='SyncBN'`` in a config tree into ``'BN'``; returns the count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_syncbn(value)
    return count


def adapt_to_device(cfg, launcher='none'):
    """Make a GPU config run on a CPU-only machine as well.

    Without CUDA: distributed runs use gloo (mmengine's default is NCCL), SyncBN becomes BN
    (torch's SyncBatchNorm needs a GPU), and the DDP wrapper gets no ``device_ids``.
    """
    cfg.launcher = launcher
    if torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    env_cfg.setdefault('dist_cfg', ConfigDict())
    env_cfg['dist_cfg']['backend'] = 'gloo'
    env_cfg['cudnn_benchmark'] = False
    if 'model' in cfg:
        _replace_syncbn(cfg.model)
    if launcher != 'none':
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
        wrapper['device_ids'] = None
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
    return cfg


def init_cpu_distributed(cfg):
    """mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which a CPU-only torch lacks;
    start the process group (gloo, from torchrun's env vars) ourselves so the runner finds it.

    Returns True when this function started the group (see :func:`finish_distributed`)."""
    if torch.cuda.is_available() or cfg.get('launcher', 'none') != 'pytorch':
        return False
    import torch.distributed as dist
    if not dist.is_available() or dist.is_initialized():
        return False
    import datetime
    kwargs = {}
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)
    return True


def finish_distributed():
    """Wait for every rank, then tear down the process group we started: a gloo group left to
    the interpreter's exit can abort the process ('terminate called without an active
    exception') after the work is done."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()



# ---------------------------------------------------------------------------- runner and hooks
def build_runner(cfg):
    """The runner for ``cfg``; ``runner.mmext_owns_dist`` tells whether mmext started the
    process group (then :func:`run_and_finish` tears it down)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    owns_dist = init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.mmext_owns_dist = owns_dist
    return runner


def run_and_finish(runner, method):
    """``runner.train()`` or ``runner.test()``, then the process-group teardown if ours."""
    try:
        return getattr(runner, method)()
    finally:
        if getattr(runner, 'mmext_owns_dist', False):
            finish_distributed()

