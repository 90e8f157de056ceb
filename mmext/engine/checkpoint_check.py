"""Checking, before mmengine loads it, that a checkpoint fits the model a run built.

mmengine's ``load_checkpoint`` only warns about missing keys and shape mismatches, so a
checkpoint of another arch or family tests as a randomly initialised model and exits 0. mmext
reads the file itself first (``weights_only=True``, through :func:`mmext.checkpoints.loading.
read_checkpoint`) and refuses it when the model's weights are not all there with their shapes.
"""
from mmext.errors import CheckpointError

# Model weights a checkpoint may lack when it is only tested: parts that inference never runs
# (mmseg's auxiliary heads are used for the training loss only).
TEST_MAY_LACK = ('auxiliary_head.',)
_SHOWN = 4


def read_training_checkpoint(path, need_training_state=False):
    """The file's ``(state_dict, checkpoint)``: weights only, ``module.`` prefixes removed.

    ``need_training_state``: the file must be an mmengine training checkpoint (``meta`` with
    the epoch/iteration, as ``--resume`` needs).
    """
    from mmext.checkpoints.loading import read_checkpoint
    import torch
    obj = read_checkpoint(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f'checkpoint {path!r} holds a {type(obj).__name__}, not a dict '
                              'of weights.')
    state = obj.get('state_dict', obj)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} \
        if isinstance(state, dict) else {}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    if not state:
        raise CheckpointError(f'checkpoint {path!r} holds no weights (no tensors); pass a '
                              'checkpoint that training wrote (epoch_*.pth / iter_*.pth).')
    if need_training_state and not isinstance(obj.get('meta'), dict):
        raise CheckpointError(
            f'checkpoint {path!r} is not a training checkpoint written by mmengine (it has no '
            "'meta' with the epoch and iteration), so training cannot resume from it; to start "
            f'from its weights use --cfg-options load_from={path} without --resume.')
    return state, obj


def _shape(t):
    return tuple(t.shape)


def check_state_dict_fits(model_state, ckpt_state, source, may_lack=()):
    """Raise :class:`CheckpointError` when ``ckpt_state`` does not fit ``model_state``.

    Refused: no weight name in common; a model weight the checkpoint lacks (other than
    BatchNorm's ``num_batches_tracked`` and names starting with one of ``may_lack``); a weight
    of another shape. Extra checkpoint weights are allowed (e.g. a head the test config drops).
    Returns the names the checkpoint has and the model does not.
    """
    model_keys, ckpt_keys = set(model_state), set(ckpt_state)
    common = model_keys & ckpt_keys
    if not common:
        raise CheckpointError(
            f'checkpoint {source} does not fit the model: no weight name in common (checkpoint: '
            f'{", ".join(sorted(ckpt_keys)[:_SHOWN])}, ...; model: '
            f'{", ".join(sorted(model_keys)[:_SHOWN])}, ...). Is it a backbone-only (ImageNet) '
            'checkpoint? Those go into model.backbone.init_cfg; tools/test.py and --resume need '
            'a checkpoint that training with this config wrote.')
    missing = sorted(k for k in model_keys - ckpt_keys
                     if not k.endswith('num_batches_tracked') and not k.startswith(tuple(may_lack)))
    mismatched = sorted(k for k in common if _shape(model_state[k]) != _shape(ckpt_state[k]))
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f'{len(missing)} model weights are missing from it '
                         f'({", ".join(missing[:_SHOWN])}{", ..." if len(missing) > _SHOWN else ""})')
        if mismatched:
            shown = ', '.join(f'{k}: checkpoint {list(_shape(ckpt_state[k]))} vs model '
                              f'{list(_shape(model_state[k]))}' for k in mismatched[:_SHOWN])
            parts.append(f'{len(mismatched)} have another shape ({shown}'
                         f'{", ..." if len(mismatched) > _SHOWN else ""})')
        raise CheckpointError(
            f'checkpoint {source} does not fit the model of this config: '
            + '; '.join(parts) + '. Was it trained with another config (arch, family, '
            'num_classes, widths)? Pass the checkpoint this config\'s training wrote.')
    return sorted(ckpt_keys - model_keys)


def check_checkpoint_fits(runner, path, may_lack=(), need_training_state=False):
    """Read ``path`` and check it against ``runner``'s model (before mmengine loads it)."""
    from mmext.utils import unwrap_model
    state, _ = read_training_checkpoint(path, need_training_state)
    model_state = unwrap_model(runner.model).state_dict()
    extra = check_state_dict_fits(model_state, state, repr(str(path)), may_lack)
    if extra:
        runner.logger.info(f'mmext: checkpoint {path} has {len(extra)} weights the model does '
                           f'not use (e.g. {", ".join(extra[:_SHOWN])}); ignored.')
    return state
