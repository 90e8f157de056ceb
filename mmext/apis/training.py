"""Training, as ``tools/train.py`` and ``tools/dist_train.sh`` run it.

No run loses another's files: a work dir that holds checkpoints of an earlier run is refused
unless the run resumes (``--resume``) or overwrites on purpose (``--overwrite``); ``--resume``
without a checkpoint to resume from is refused; checkpoints are written to a temporary file and
renamed into place (:func:`save_checkpoints_atomically`), so a full disk stops the run with one
error and leaves no partial checkpoint.
"""
import contextlib
import glob
import os
import os.path as osp

from mmext.apis.checks import checked
from mmext.checkpoints.files import normal_mode, writable_folder
from mmext.errors import CheckpointError, ConfigError, OutputError, os_error_hint
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
    dir (see :func:`check_work_dir`: refused when there is none); a path: that checkpoint."""
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


#: what mmengine's CheckpointHook leaves in a work dir (or its out_dir)
CHECKPOINT_PATTERNS = ('epoch_*.pth', 'iter_*.pth', 'best_*.pth', 'last_checkpoint')


def checkpoint_folders(cfg):
    """The folders a run's checkpoints go to: the work dir, and the CheckpointHook's
    ``out_dir/<work dir name>`` when one is set."""
    folders = [cfg.work_dir]
    out_dir = ((cfg.get('default_hooks') or {}).get('checkpoint') or {}).get('out_dir')
    if out_dir and not is_remote(out_dir):
        folders.append(osp.join(out_dir, osp.basename(osp.normpath(cfg.work_dir))))
    return folders


def previous_checkpoints(cfg):
    """Checkpoint files an earlier run left where this run writes its own (sorted)."""
    found = []
    for folder in checkpoint_folders(cfg):
        for pattern in CHECKPOINT_PATTERNS:
            found += glob.glob(osp.join(glob.escape(folder), pattern))
    return sorted(set(found))


def check_work_dir(cfg, overwrite=False):
    """Refuse to start fresh over another run's checkpoints, and to resume from nothing.

    Raises:
        OutputError: the work dir holds checkpoints, the run neither resumes nor overwrites.
        CheckpointError: ``--resume`` without a value, and no checkpoint in the work dir.
    """
    if cfg.get('resume') and not cfg.get('load_from'):
        latest = resume_checkpoint(cfg)
        if latest is None:
            raise CheckpointError(
                f'--resume: the work dir {cfg.work_dir!r} holds no checkpoint to resume from; '
                'pass the checkpoint (--resume PATH), the work dir of the run to continue '
                '(--work-dir), or drop --resume to start a new run.')
        if not is_remote(latest) and not osp.isfile(latest):
            raise CheckpointError(
                f'--resume: {osp.join(cfg.work_dir, "last_checkpoint")} names {latest}, which '
                'does not exist (deleted or moved); pass the checkpoint to resume from '
                '(--resume PATH).')
        return
    if cfg.get('resume') or overwrite:
        return
    found = previous_checkpoints(cfg)
    if found:
        names = ', '.join(osp.basename(p) for p in found[:4]) + (', ...' if len(found) > 4 else '')
        raise OutputError(
            f'the work dir {cfg.work_dir!r} holds checkpoints of another run ({names}) that this '
            'run would overwrite; pass --resume to continue that run, a new --work-dir to start '
            'another, or --overwrite to start over in this one.')


def save_checkpoints_atomically(runner):
    """Make ``runner`` write each checkpoint to a temporary file next to it and rename it into
    place once complete; a write that fails (full disk, read-only folder) removes the temporary
    file and raises one :class:`OutputError` naming the checkpoint. Earlier checkpoints stay."""
    save = runner.save_checkpoint

    def save_checkpoint(out_dir, filename, *args, **kwargs):
        if is_remote(out_dir) or getattr(runner, 'rank', 0) != 0:
            return save(out_dir, filename, *args, **kwargs)
        final = osp.join(out_dir, filename)
        part_name = f'.{filename}.{os.getpid()}.part'
        part = osp.join(out_dir, part_name)
        try:
            save(out_dir, part_name, *args, **kwargs)
            os.chmod(part, normal_mode())
            os.replace(part, final)
        except OSError as exc:
            raise OutputError(
                f'cannot write the checkpoint {final} ({exc.strerror or exc}; '
                f'{os_error_hint(exc)}); the run stopped, and no partial file was left (earlier '
                f'checkpoints in {out_dir} are complete: --resume continues from the latest).') \
                from None
        finally:
            if osp.lexists(part):
                os.remove(part)

    runner.save_checkpoint = save_checkpoint
    return runner


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


@checked(config='config', work_dir='path', cfg_options='dict', resume='resume', launcher='str',
         amp='bool', auto_scale_lr='bool', overwrite='bool')
def train(config, work_dir=None, cfg_options=None, resume=False, launcher='none', amp=False,
          auto_scale_lr=False, overwrite=False):
    """Train the model a config describes with mmengine's Runner.

    Args:
        config (str | Config): config file (or a loaded Config).
        work_dir (str, optional): logs and checkpoints; default ``work_dirs/<config name>``.
        cfg_options (dict, optional): overrides, as ``--cfg-options`` gives them (keys checked,
            see :mod:`mmext.engine.cfg_options`).
        resume (bool | str): ``'auto'``/``True`` resumes from the latest checkpoint in the
            work dir (refused when there is none), a path resumes from that checkpoint; the
            random states saved with it are restored, so the run continues as if never
            interrupted.
        launcher (str): ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.
        amp (bool): mixed precision (GPU only).
        auto_scale_lr (bool): scale the lr to the actual total batch size.
        overwrite (bool): start fresh in a work dir that holds another run's checkpoints
            (refused otherwise: they would be overwritten).

    Returns:
        dict: the metrics of the last validation (empty when none ran).

    Raises:
        mmext.errors.DatasetNotFoundError: a dataset the run needs is missing (checked before
            anything is built).
        mmext.errors.WorkDirBusyError: another live run holds the work dir.
        mmext.errors.OutputError: the work dir holds another run's checkpoints (and neither
            ``resume`` nor ``overwrite``), cannot be written, or the disk filled up.
        mmext.errors.CheckpointError: the checkpoint to resume from is missing, unreadable, not
            a training checkpoint, or does not fit the model.
    """
    cfg, _ = prepare_train_cfg(config, work_dir, cfg_options, resume, launcher, amp,
                               auto_scale_lr)
    splits = ['train']
    if cfg.get('val_cfg') and cfg.get('val_dataloader') and cfg.get('val_evaluator'):
        splits.append('val')
    check_datasets(cfg, splits)
    rank = _launch_rank(launcher)
    if rank == 0 and not is_remote(cfg.work_dir):
        writable_folder(cfg.work_dir, 'work dir (--work-dir)')
    # rank 0 holds the work dir for the whole job; the other ranks share it
    lock = WorkDirLock(cfg.work_dir) if rank == 0 else None
    with lock or contextlib.nullcontext():
        check_work_dir(cfg, overwrite)  # after the lock: a live run is named as one
        runner = build_runner(cfg)
        save_checkpoints_atomically(runner)
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
