"""Launching a run: adapting a GPU config to a CPU-only machine, the process group, the runner."""
import itertools
import os
import os.path as osp

import torch
from mmengine.config import ConfigDict

from mmext.errors import ConfigError

# What each launcher's processes find in their environment.
LAUNCHER_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
}
_LAUNCH_HINT = {
    'pytorch': 'start it with torchrun (tools/dist_train.sh / tools/dist_test.sh), or drop '
               '--launcher pytorch for a single process',
    'slurm': 'start it with srun (tools/slurm_train.sh), or drop --launcher slurm for a '
             'single process',
}
_RUN_COUNT = itertools.count()


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


def check_launcher(launcher):
    """Raise :class:`ConfigError` when ``launcher`` is unknown or its environment is missing
    (``--launcher pytorch`` outside torchrun would otherwise fail deep in mmengine)."""
    if launcher in (None, 'none'):
        return
    if launcher not in LAUNCHER_ENV:
        raise ConfigError(f'unknown launcher {launcher!r}; expected none, pytorch or slurm.')
    missing = [v for v in LAUNCHER_ENV[launcher] if v not in os.environ]
    if missing:
        raise ConfigError(f'--launcher {launcher} needs {", ".join(missing)} in the environment '
                          f'(set by its launcher); {_LAUNCH_HINT[launcher]}.')


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
    run = next(_RUN_COUNT)
    if run and not cfg.get('experiment_name'):
        # mmengine keys its logger, message hub and visualizer by experiment name (config name +
        # second): a second run in this process within that second would log into the first's
        stem = osp.splitext(osp.basename(cfg.filename or 'mmext'))[0]
        cfg.experiment_name = f'{stem}_run{run}'
    owns_dist = init_cpu_distributed(cfg)
    try:
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    except (KeyError, TypeError) as exc:
        if not _is_config_mistake(exc):
            raise
        raise ConfigError(f'cannot build the model from the config: {_first_line(exc)}') from exc
    runner.mmext_owns_dist = owns_dist
    return runner


def _first_line(exc):
    return str(exc).strip().strip('"\'').splitlines()[0] if str(exc).strip() else repr(exc)


def _is_config_mistake(exc):
    """A registry's unknown ``type`` or a class given an argument it does not take."""
    text = str(exc)
    return ('is not in the' in text and 'registry' in text) or \
        'unexpected keyword argument' in text or 'required positional argument' in text


def run_and_finish(runner, method):
    """``runner.train()`` or ``runner.test()``, then the process-group teardown if ours."""
    from mmext.compat import weights_only_checkpoints
    try:
        with weights_only_checkpoints():
            return getattr(runner, method)()
    finally:
        if getattr(runner, 'mmext_owns_dist', False):
            finish_distributed()

