"""Training, as ``tools/train.py`` and ``tools/dist_train.sh`` run it."""
import contextlib
import os
import os.path as osp

from mmext.errors import CheckpointError, ConfigError
from mmext.engine.checkpoint_check import check_checkpoint_fits
from mmext.engine.config import detect_codebase, load_config, register_codebase, set_work_dir
from mmext.engine.datasets import check_datasets
from mmext.engine.hooks import MetricsRecorder, ensure_custom_hook
from mmext.engine.launch import adapt_to_device, build_runner, check_launcher, run_and_finish
from mmext.engine.metrics import print_metrics
from mmext.engine.workdir_lock import WorkDirLock
from mmext.utils import is_remote


def _set_resume(cfg, resume):
    """``False``/``None``: start fresh; ``True``/``'auto'``: the latest checkpoint in the work
    dir (fresh start when there is none); a path: that checkpoint."""
    if resume in (None, False):
        return
    cfg.resume = True
    if resume is True or resume == 'auto':
        cfg.load_from = None
    else:
        if not is_remote(resume) and not osp.isfile(str(resume)):
            raise CheckpointError(f'--resume checkpoint {str(resume)!r} does not exist; pass a '
                                  'checkpoint that training wrote, or --resume without a value '
                                  'for the latest one of the work dir.')
        cfg.load_from = str(resume)


def resume_checkpoint(cfg):
    """The checkpoint a run will resume from (None: a fresh start), as mmengine picks it."""
    if not cfg.get('resume'):
        return None
    if cfg.get('load_from'):
        return cfg.load_from
    from mmengine.runner import find_latest_checkpoint
    return find_latest_checkpoint(cfg.work_dir)


def prepare_train_cfg(config, work_dir=None, cfg_options=None, resume=False,
                      launcher='none', amp=False, auto_scale_lr=False):
    """The config a training run uses (loaded, overridden, adapted to this machine)."""
    check_launcher(launcher)
    cfg = load_config(config, cfg_options)
    codebase = detect_codebase(cfg)
    register_codebase(codebase)
    set_work_dir(cfg, config, work_dir)
    if amp:
        import torch
        if not torch.cuda.is_available():
            raise ConfigError('--amp (mixed precision) needs a CUDA GPU; this machine has none. '
                              'Run without --amp.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise ConfigError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config.')
        cfg.auto_scale_lr.enable = True
    _set_resume(cfg, resume)
    adapt_to_device(cfg, launcher)
    # exact --resume: the random states go into every checkpoint (mmext's configs have it)
    ensure_custom_hook(cfg, 'RNGStateHook')
    return cfg, codebase


def _launch_rank(launcher):
    """This process's global rank, from its launcher's environment (before any process group)."""
    var = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID'}.get(launcher)
    return int(os.environ.get(var, 0)) if var else 0


def train(config, work_dir=None, cfg_options=None, resume=False, launcher='none', amp=False,
          auto_scale_lr=False):
    """Train the model a config describes with mmengine's Runner.

    Args:
        config (str | Config): config file (or a loaded Config).
        work_dir (str, optional): logs and checkpoints; default ``work_dirs/<config name>``.
        cfg_options (dict, optional): overrides, as ``--cfg-options`` gives them (keys checked,
            see :mod:`mmext.engine.cfg_options`).
        resume (bool | str): ``'auto'``/``True`` resumes from the latest checkpoint in the
            work dir, a path resumes from that checkpoint; the random states saved with it are
            restored, so the run continues as if never interrupted.
        launcher (str): ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.
        amp (bool): mixed precision (GPU only).
        auto_scale_lr (bool): scale the lr to the actual total batch size.

    Returns:
        dict: the metrics of the last validation (empty when none ran).

    Raises:
        mmext.errors.DatasetNotFoundError: a dataset the run needs is missing (checked before
            anything is built).
        mmext.errors.WorkDirBusyError: another live run holds the work dir.
        mmext.errors.CheckpointError: the checkpoint to resume from is unreadable, not a
            training checkpoint, or does not fit the model.
    """
    cfg, _ = prepare_train_cfg(config, work_dir, cfg_options, resume, launcher, amp,
                               auto_scale_lr)
    splits = ['train']
    if cfg.get('val_cfg') and cfg.get('val_dataloader') and cfg.get('val_evaluator'):
        splits.append('val')
    check_datasets(cfg, splits)
    # rank 0 holds the work dir for the whole job; the other ranks share it
    lock = WorkDirLock(cfg.work_dir) if _launch_rank(launcher) == 0 else None
    with lock or contextlib.nullcontext():
        runner = build_runner(cfg)
        if lock is not None and lock.note:
            runner.logger.warning(lock.note)
        resume_from = resume_checkpoint(cfg)
        if resume_from:
            check_checkpoint_fits(runner, resume_from, need_training_state=True)
        recorder = MetricsRecorder()
        runner.register_hook(recorder)
        run_and_finish(runner, 'train')
    print_metrics(recorder.metrics, f'mmext: last validation metrics (work dir {cfg.work_dir})',
                  rank=runner.rank)
    return recorder.metrics
