"""Evaluation, as ``tools/test.py`` and ``tools/dist_test.sh`` run it."""
import os.path as osp

from mmext.checkpoints.files import writable_folder
from mmext.apis.checks import checked
from mmext.apis.training import _launch_rank
from mmext.errors import CheckpointError
from mmext.engine.checkpoint_check import (TEST_MAY_LACK, check_checkpoint_fits,
                                           read_training_checkpoint)
from mmext.engine.config import detect_codebase, load_config, register_codebase, set_work_dir
from mmext.engine.datasets import check_datasets
from mmext.engine.hooks import FuseBackboneHook, MetricsRecorder
from mmext.engine.launch import adapt_to_device, build_runner, check_launcher, run_and_finish
from mmext.engine.metrics import print_metrics
from mmext.utils import is_remote


@checked(config='config', checkpoint='path', work_dir='path', cfg_options='dict', launcher='str',
         fuse='bool', bf16='bool')
def test(config, checkpoint, work_dir=None, cfg_options=None, launcher='none', fuse=False,
         bf16=False):
    """Evaluate a checkpoint on the config's test set with mmengine's Runner.

    Args:
        config (str | Config): config file (or a loaded Config).
        checkpoint (str): the trained model (mmengine checkpoint).
        work_dir (str, optional): where the logs go; default ``work_dirs/<config name>``.
        cfg_options (dict, optional): overrides, as ``--cfg-options`` gives them.
        launcher (str): ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.
        fuse (bool): fold the backbone's BatchNorms and re-parameterised branches
            (``backbone.switch_to_deploy()``) after loading, for faster inference; checked
            (no BatchNorm left, same features) before testing.
        bf16 (bool): run the test loop in fp32, then again with backbone and neck in bf16
            (:func:`mmext.engine.precision.test_fp32_then_bf16`; native bf16 only) and print
            both metrics and the speed-up; the bf16 metrics are returned.

    Returns:
        dict: the test metrics (``coco/bbox_mAP``, ``coco/segm_mAP``, ... or ``mIoU``, ...).

    Raises:
        mmext.errors.CheckpointError: the checkpoint is missing, unreadable, empty, or does not
            fit the model (missing weights or other shapes, checked before mmengine loads it).
    """
    check_launcher(launcher)
    if bf16:  # refused before anything is built where bf16 is not native
        import torch
        from mmext.engine.precision import check_bf16
        check_bf16('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = load_config(config, cfg_options)
    codebase = detect_codebase(cfg)
    register_codebase(codebase)
    set_work_dir(cfg, config, work_dir)
    if not is_remote(checkpoint) and not osp.isfile(str(checkpoint)):
        raise CheckpointError(f'checkpoint {checkpoint!r} does not exist; pass the .pth file '
                              'that training wrote in its work dir (e.g. epoch_12.pth, '
                              'iter_40000.pth).')
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    # The backbone's own pretrained weights are replaced by the checkpoint anyway.
    if cfg.get('model', {}).get('backbone', {}).get('init_cfg'):
        cfg.model.backbone.init_cfg = None
    adapt_to_device(cfg, launcher)
    check_datasets(cfg, ['test'])
    if _launch_rank(launcher) == 0 and not is_remote(cfg.work_dir):
        writable_folder(cfg.work_dir, 'work dir (--work-dir)')
    runner = build_runner(cfg)
    # mmengine only warns about a checkpoint that does not fit (and tests random weights)
    try:
        check_checkpoint_fits(runner, checkpoint, may_lack=TEST_MAY_LACK)
    except CheckpointError:
        hint = fused_mismatch(runner, checkpoint)
        if hint is None:
            raise
        raise CheckpointError(hint) from None
    recorder = MetricsRecorder()
    runner.register_hook(recorder)
    if fuse:
        runner.register_hook(FuseBackboneHook())
    if bf16:
        result = run_and_finish(_Bf16Run(runner), 'test')
        print_metrics(result['fp32'], f'mmext: fp32 test metrics of {checkpoint}',
                      rank=runner.rank)
        metrics = result['bf16']
    else:
        metrics = run_and_finish(runner, 'test') or recorder.metrics
    print_metrics(metrics, f'mmext: test metrics of {checkpoint}', rank=runner.rank)
    return dict(metrics)


def fused_mismatch(runner, checkpoint):
    """What to do when ``checkpoint``'s backbone is fused and the model's is not, or the
    reverse (``None`` when that is not why it does not fit)."""
    from mmext.utils import unwrap_model
    backbone = getattr(unwrap_model(runner.model), 'backbone', None)
    if not hasattr(backbone, '_other_structure'):
        return None
    state, _ = read_training_checkpoint(checkpoint)
    keys = {k[len('backbone.'):] for k in state if k.startswith('backbone.')}
    if not keys or not backbone._other_structure(keys):
        return None
    name = type(backbone).__name__
    if getattr(backbone, 'deploy', False):
        return (f'checkpoint {checkpoint!r} holds an unfused {name} backbone (with BatchNorms), '
                'but the config builds it fused (model.backbone.deploy=True). Build it without '
                'deploy=True (--cfg-options model.backbone.deploy=False) and pass --fuse to fold '
                'it after loading.')
    return (f'checkpoint {checkpoint!r} holds a fused {name} backbone (saved after '
            'switch_to_deploy(): no BatchNorms), but the config builds it unfused. Build it with '
            'deploy=True (--cfg-options model.backbone.deploy=True); --fuse is then not needed.')


class _Bf16Run:
    """``test()`` = fp32 then bf16 test loops (mmext.engine.precision), for run_and_finish."""

    def __init__(self, runner):
        self.runner = runner
        self.mmext_owns_dist = getattr(runner, 'mmext_owns_dist', False)

    def test(self):
        from mmext.engine.precision import test_fp32_then_bf16
        result = test_fp32_then_bf16(self.runner)
        if self.runner.rank == 0:
            print(f'mmext: bf16 test loop {result["bf16_s"]} s vs fp32 {result["fp32_s"]} s: '
                  f'{result["speedup"]}x (backbone+neck {result["parts_speedup"]}x); largest '
                  f'metric change {result["max_abs_diff"]}')
        return result
