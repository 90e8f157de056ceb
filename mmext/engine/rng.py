"""Random-number-generator states as plain data, for checkpoints loaded with weights_only=True.

Python's ``random``, NumPy's global generator and torch's CPU (and, where present, CUDA)
generators, as ints, lists and tensors only (no pickled NumPy objects), so a checkpoint that
holds them still loads with ``torch.load(weights_only=True)``.
"""
import random

import numpy as np
import torch


def get_rng_state():
    """The current states of every global generator a training step may draw from."""
    version, internal, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=dict(version=int(version), state=[int(x) for x in internal],
                    gauss=None if gauss is None else float(gauss)),
        numpy=dict(key=str(key), state=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned (CUDA's only where it was saved and exists)."""
    py = state['python']
    random.setstate((py['version'], tuple(py['state']), py['gauss']))
    nps = state['numpy']
    np.random.set_state((nps['key'], nps['state'].numpy().astype(np.uint32), nps['pos'],
                         nps['has_gauss'], nps['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if state.get('cuda') is not None and torch.cuda.is_available():
        states = state['cuda']
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
