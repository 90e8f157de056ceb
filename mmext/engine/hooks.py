"""mmengine hooks that mmext's runs register.

``RNGStateHook`` is registered in mmengine's ``HOOKS`` (``custom_hooks = [dict(type=
'RNGStateHook')]``; mmext's schedule bases enable it and ``tools/train.py`` adds it when a
config lacks it).
"""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmext.errors import MmextError
from mmext.engine.rng import get_rng_state, set_rng_state
from mmext.utils import max_rel_err, output_list, unwrap_model


class MetricsRecorder(Hook):
    """Keeps the metrics of the last validation (train) or test run."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)

    def after_test_epoch(self, runner, metrics=None):
        if metrics:
            self.metrics = dict(metrics)


def count_batchnorms(module):
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


class FuseBackboneHook(Hook):
    """Calls ``backbone.switch_to_deploy()`` once the checkpoint is loaded, before testing, and
    checks the result: no BatchNorm left in the backbone, and the same features as before on a
    probe input (relative error below ``tolerance``); otherwise it raises."""

    # VERY_LOW: runs after mmengine's EMAHook, which swaps the averaged weights in at
    # before_test_epoch; the fused backbone is built from those.
    priority = 'VERY_LOW'

    def __init__(self, probe_size=(1, 3, 64, 64), tolerance=1e-4):
        self.fused = False
        self.probe_size = tuple(probe_size)
        self.tolerance = tolerance
        self.max_rel_err = None

    @torch.no_grad()
    def _features(self, backbone, probe):
        return [t.detach().clone() for t in output_list(backbone(probe))]

    def before_test_epoch(self, runner):
        model = unwrap_model(runner.model)
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'switch_to_deploy'):
            runner.logger.warning('mmext: --fuse asked, but the model\'s backbone has no '
                                  'switch_to_deploy(); testing it unfused.')
            return
        was_training = backbone.training
        backbone.eval()
        param = next(backbone.parameters(), None)
        probe = torch.randn(self.probe_size, generator=torch.Generator().manual_seed(0))
        if param is not None:
            probe = probe.to(param.device, param.dtype)
        before = self._features(backbone, probe)
        bns = count_batchnorms(backbone)
        backbone.switch_to_deploy()
        left = count_batchnorms(backbone)
        self.max_rel_err = max_rel_err(before, self._features(backbone, probe))
        backbone.train(was_training)
        if left or self.max_rel_err is None or self.max_rel_err > self.tolerance:
            raise MmextError(f'fusing the backbone failed its check: {left} BatchNorm layers '
                             f'left (of {bns}), feature relative error {self.max_rel_err} '
                             f'(tolerance {self.tolerance}); test without --fuse.')
        self.fused = True
        self._keep_ema_weights(runner)
        runner.logger.info(f'mmext: fused the backbone (switch_to_deploy) for testing: {bns} '
                           f'BatchNorm layers folded, none left, features equal (max relative '
                           f'error {self.max_rel_err:.1e}).')

    @staticmethod
    def _keep_ema_weights(runner):
        """An EMA hook swaps the raw weights back after the test epoch, parameter by parameter;
        the fused backbone has other parameters, so that swap would fail. The test is the end of
        the run and the averaged weights are the ones tested, so the swap back is skipped."""
        from mmengine.hooks import EMAHook
        for hook in runner.hooks:
            if isinstance(hook, EMAHook):
                hook.after_test_epoch = lambda *args, **kwargs: None
                runner.logger.info('mmext: the EMA weights stay in the fused model after testing.')


def _seeded_samplers(loader):
    """The samplers of a dataloader that shuffle by a seed (mmengine's Default/InfiniteSampler)."""
    found = []
    for sampler in (getattr(loader, 'sampler', None),
                    getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)):
        if sampler is not None and hasattr(sampler, 'seed') and sampler not in found:
            found.append(sampler)
    return found


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Makes ``--resume`` exact: a run resumed from a checkpoint draws the same random numbers
    as the run that wrote it would have drawn next.

    * Saving: the states of Python's ``random``, NumPy and torch (CPU, and CUDA where present;
      every rank's in a distributed run) go into ``checkpoint['rng_state']`` as plain ints,
      lists and tensors (loads with ``weights_only=True``).
    * Resuming: mmengine reseeds with the checkpoint's seed after loading, and it built the
      train dataloader before that with this run's seed; the hook gives the samplers and the
      workers' init function the checkpoint's seed and restores the generator states last,
      just before training continues (``before_train`` of an epoch-based loop; the first
      ``before_train_iter`` of an iteration-based one, after mmengine fast-forwards the data).

    Exact (tested bit for bit on the CPU) for epoch-based loops, and for iteration-based loops
    whose data come from workers (mmengine's fast-forward then replays the skipped batches in
    the workers, as the first run did). Not exact when the train dataloader has
    ``persistent_workers=True`` in an epoch-based loop (mmdet's dataset bases: worker processes
    keep their own generator states across epochs, which a checkpoint cannot hold;
    ``persistent_workers=False`` restarts them each epoch from fixed seeds, and is exact) and for iteration-based loops whose
    random transforms run in the main process (``num_workers=0``: the fast-forward draws from
    the main generators); a warning says so.
    """

    priority = 'VERY_HIGH'

    def __init__(self):
        self._pending = None
        self._gathered = None

    def _checkpoint_hook(self, runner):
        from mmengine.hooks import CheckpointHook
        return next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)

    def _gather(self, runner):
        """Every rank's states, gathered on all ranks at the points a checkpoint may be saved
        (mmengine saves on rank 0 only, where no collective call can be made)."""
        from mmengine.dist import all_gather_object, get_world_size
        if get_world_size() > 1:
            self._gathered = all_gather_object(get_rng_state())

    def after_train_epoch(self, runner):
        ckpt = self._checkpoint_hook(runner)
        if ckpt is not None and ckpt.by_epoch:
            self._gather(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        ckpt = self._checkpoint_hook(runner)
        if ckpt is not None and not ckpt.by_epoch and ckpt.interval > 0 and (
                (runner.iter + 1) % ckpt.interval == 0 or runner.iter + 1 == runner.max_iters):
            self._gather(runner)

    def before_save_checkpoint(self, runner, checkpoint):
        from mmengine.dist import get_world_size
        if get_world_size() == 1:
            states = [get_rng_state()]
        else:
            states, self._gathered = self._gathered, None
        if states:
            checkpoint['rng_state'] = dict(ranks=states)

    def after_load_checkpoint(self, runner, checkpoint):
        if not getattr(runner, '_resume', False) or 'rng_state' not in checkpoint:
            return
        states = checkpoint['rng_state'].get('ranks') or []
        if len(states) != runner.world_size:
            runner.logger.warning(
                f'mmext: the checkpoint holds random states of {len(states)} processes, this run '
                f'has {runner.world_size}; resuming without them (not bit-exact).')
            return
        self._pending = states[runner.rank]
        seed = checkpoint.get('meta', {}).get('seed')
        if seed is not None:
            self._reseed_dataloader(runner, seed)

    def _reseed_dataloader(self, runner, seed):
        import functools
        loop = runner.train_loop
        loader = loop.dataloader
        changed = False
        for sampler in _seeded_samplers(loader):
            if sampler.seed != seed:
                sampler.seed, changed = seed, True
                if hasattr(sampler, '_indices_of_rank'):  # InfiniteSampler: its index stream
                    sampler.indices = sampler._indices_of_rank()
        init_fn = getattr(loader, 'worker_init_fn', None)
        if isinstance(init_fn, functools.partial) and (init_fn.keywords or {}).get(
                'seed', seed) != seed:
            loader.worker_init_fn = functools.partial(
                init_fn.func, *init_fn.args, **dict(init_fn.keywords, seed=seed))
            changed = True
        if changed and hasattr(loop, 'dataloader_iterator'):
            # an iteration-based loop iterates (and starts its workers) when it is built:
            # start over with the checkpoint's seed
            loop.dataloader_iterator = type(loop.dataloader_iterator)(loader)
        if getattr(loader, 'num_workers', 0) > 0 and getattr(loader, 'persistent_workers', False) \
                and not hasattr(loop, 'dataloader_iterator'):  # epoch-based: new workers
            runner.logger.warning('mmext: persistent_workers=True: the data workers\' random '
                                  'states are not in the checkpoint, so random transforms after '
                                  'this resume differ from an uninterrupted run (for a bit-exact '
                                  'resume train with train_dataloader.persistent_workers=False).')

    def _restore(self, runner):
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
            runner.logger.info('mmext: restored the random states saved with the checkpoint.')

    def before_train(self, runner):
        from mmengine.runner import IterBasedTrainLoop
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore(runner)
        elif self._pending is not None and getattr(runner.train_loop.dataloader,
                                                   'num_workers', 0) == 0:
            runner.logger.warning('mmext: iteration-based resume with num_workers=0: mmengine '
                                  'replays the skipped batches\' transforms, so random '
                                  'transforms differ from an uninterrupted run.')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._restore(runner)


def ensure_custom_hook(cfg, type_name, **kwargs):
    """Add ``dict(type=type_name, **kwargs)`` to ``cfg.custom_hooks`` unless a hook of that type
    is there already; returns True when it was added."""
    hooks = list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        hook_type = hook.get('type') if isinstance(hook, dict) else type(hook)
        name = hook_type if isinstance(hook_type, str) else getattr(hook_type, '__name__', '')
        if name.split('.')[-1] == type_name:
            return False
    hooks.append(dict(type=type_name, **kwargs))
    cfg.custom_hooks = hooks
    return True
