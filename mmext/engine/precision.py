"""bf16 at test time: a detector's or segmentor's backbone and neck run in bfloat16.

:class:`Bf16Parts` is a context manager that swaps each named part of a model (default
``backbone`` and ``neck``) for a :class:`Bf16Module`: a bf16, channels-last copy of it whose
forward casts its input to bf16, runs under bf16 autocast and casts its outputs back to float32,
so the heads and their custom ops (RoIAlign, NMS) see the float32 maps they expect. The float32
parts are kept untouched and put back on exit. :class:`Bf16TestHook` does this around mmengine's
test loop and records the loop's time; ``tools/test.py --bf16`` runs the loop in fp32 and then
in bf16 and prints both metrics and the speed-up.

bf16 is used only where the device computes it natively (:func:`mmext.deploy.runners.native_bf16`:
AVX512-BF16 or AMX on a CPU; CUDA GPUs with bf16); elsewhere torch would emulate it, slower than
fp32, and :func:`check_bf16` raises a :class:`~mmext.errors.ConfigError` that says so.
"""
import copy
import time

import torch
from mmengine.hooks import Hook

from mmext.compat import native_bf16, weights_only_checkpoints
from mmext.deploy.runners import to_bf16
from mmext.errors import ConfigError
from mmext.utils import unwrap_model

DEFAULT_PARTS = ('backbone', 'neck')


def check_bf16(device):
    """Raise a ConfigError unless ``device`` (``'cpu'``/``'cuda'``) computes bf16 natively."""
    device = torch.device(device).type
    if not native_bf16(device):
        where = 'this CPU has neither AVX512-BF16 nor AMX' if device == 'cpu' else \
            'this GPU has no bf16'
        raise ConfigError(f'--bf16 needs native bf16 arithmetic and {where}; test in fp32 '
                          '(without --bf16).')


def _cast_out(out):
    if isinstance(out, torch.Tensor):
        return out.float().contiguous() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_cast_out(o) for o in out)
    if isinstance(out, dict):
        return {k: _cast_out(v) for k, v in out.items()}
    return out


def _cast_in(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return to_bf16(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast_in(v) for v in x)
    return x


class Bf16Module(torch.nn.Module):
    """A bf16, channels-last copy of ``module`` (with :func:`~mmext.deploy.fast_ops.swap_slow_layers`
    applied): float in, bf16 inside, float32 out."""

    def __init__(self, module):
        super().__init__()
        from mmext.deploy.fast_ops import swap_slow_layers
        module = copy.deepcopy(module)
        swap_slow_layers(module)  # equal, faster stand-ins (EdgeViT's depthwise deconvs)
        self.module = module.to(memory_format=torch.channels_last, dtype=torch.bfloat16)

    def forward(self, *args, **kwargs):
        device = next(self.module.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            out = self.module(*_cast_in(args), **kwargs)
        return _cast_out(out)


class Bf16Parts:
    """``with Bf16Parts(model): ...`` runs ``model.<part>`` in bf16 for each of ``parts`` the
    model has (a part it lacks is skipped; none at all is an error)."""

    def __init__(self, model, parts=DEFAULT_PARTS):
        self.model = unwrap_model(model)
        self.parts = [p for p in parts if isinstance(getattr(self.model, p, None),
                                                     torch.nn.Module)]
        if not self.parts:
            raise ConfigError(f'bf16: the model has none of the parts {", ".join(parts)}.')
        self.saved = {}

    def __enter__(self):
        for name in self.parts:
            part = getattr(self.model, name)
            param = next(part.parameters(), None)
            check_bf16(param.device if param is not None else 'cpu')
            self.saved[name] = part
            # nn.Module.__setattr__ puts it in _modules in place of the float32 part
            setattr(self.model, name, Bf16Module(part.eval()))
        return self

    def __exit__(self, *exc):
        for name, part in self.saved.items():
            setattr(self.model, name, part)
        self.saved = {}
        return False


class Bf16TestHook(Hook):
    """Runs the test loop with :class:`Bf16Parts` on the model; ``seconds`` is the loop's
    wall time (from the first test iteration to the end of the epoch)."""

    priority = 'LOWEST'  # after FuseBackboneHook (VERY_LOW) has fused the float32 backbone

    def __init__(self, parts=DEFAULT_PARTS):
        self.parts = tuple(parts)
        self.context = None
        self.seconds = None
        self._start = None

    def before_test_epoch(self, runner):
        self.context = Bf16Parts(runner.model, self.parts)
        self.context.__enter__()
        runner.logger.info(f'mmext: testing with {", ".join(self.context.parts)} in bf16')
        self._start = time.perf_counter()

    def after_test_epoch(self, runner, metrics=None):
        self.seconds = time.perf_counter() - self._start
        if self.context is not None:
            self.context.__exit__(None, None, None)
            self.context = None


class LoopTimerHook(Hook):
    """Wall time of the test loop (same span as :class:`Bf16TestHook`), for an fp32 baseline."""

    priority = 'LOWEST'

    def __init__(self):
        self.seconds = None
        self._start = None

    def before_test_epoch(self, runner):
        self._start = time.perf_counter()

    def after_test_epoch(self, runner, metrics=None):
        self.seconds = time.perf_counter() - self._start


class PartTimer:
    """Adds up the wall time spent in the forward of ``model.<part>`` for each part."""

    def __init__(self, model, parts):
        self.model, self.parts, self.seconds, self._handles, self._t = model, parts, 0.0, [], {}

    def __enter__(self):
        for name in self.parts:
            part = getattr(self.model, name, None)
            if isinstance(part, torch.nn.Module):
                self._handles += [part.register_forward_pre_hook(self._start),
                                  part.register_forward_hook(self._stop)]
        return self

    def _start(self, module, args):
        self._t[id(module)] = time.perf_counter()

    def _stop(self, module, args, out):
        self.seconds += time.perf_counter() - self._t.pop(id(module))

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False


class _TimedBf16TestHook(Bf16TestHook):
    def before_test_epoch(self, runner):
        super().before_test_epoch(runner)
        self.timer = PartTimer(unwrap_model(runner.model), self.parts).__enter__()

    def after_test_epoch(self, runner, metrics=None):
        self.timer.__exit__()
        super().after_test_epoch(runner, metrics)


def test_fp32_then_bf16(runner, parts=DEFAULT_PARTS):
    """Run ``runner``'s test loop in fp32, then with ``parts`` in bf16 (same data, same model).

    Returns ``dict(fp32=metrics, bf16=metrics, fp32_s, bf16_s, speedup, parts_fp32_s,
    parts_bf16_s, parts_speedup, max_abs_diff)``: the loop's wall time and the time spent in
    the bf16 parts in each run, and the largest change of a metric; logs the speed-ups.
    """
    model = unwrap_model(runner.model)
    device = next(model.parameters()).device
    check_bf16(device)
    timer = LoopTimerHook()
    runner.register_hook(timer)
    with PartTimer(model, parts) as parts32, weights_only_checkpoints():
        fp32 = dict(runner.test() or {})
    timer.before_test_epoch = timer.after_test_epoch = lambda *a, **k: None  # counted once
    hook = _TimedBf16TestHook(parts)
    runner.register_hook(hook)
    with weights_only_checkpoints():
        bf16 = dict(runner.test() or {})
    diff = {k: abs(float(bf16[k]) - float(v)) for k, v in fp32.items()
            if isinstance(v, (int, float)) and isinstance(bf16.get(k), (int, float))}
    result = dict(fp32=fp32, bf16=bf16, fp32_s=round(timer.seconds, 2),
                  bf16_s=round(hook.seconds, 2), speedup=round(timer.seconds / hook.seconds, 3),
                  parts_fp32_s=round(parts32.seconds, 2), parts_bf16_s=round(hook.timer.seconds, 2),
                  parts_speedup=round(parts32.seconds / max(hook.timer.seconds, 1e-9), 3),
                  max_abs_diff=round(max(diff.values()), 4) if diff else None)
    runner.logger.info(
        f'mmext: test loop fp32 {result["fp32_s"]} s, with {", ".join(parts)} in bf16 '
        f'{result["bf16_s"]} s: {result["speedup"]}x ({", ".join(parts)}: '
        f'{result["parts_fp32_s"]} s -> {result["parts_bf16_s"]} s, {result["parts_speedup"]}x); '
        f'largest metric change {result["max_abs_diff"]}')
    return result
