"""Argument types checked where they enter mmext's public functions (:mod:`mmext.apis`).

A wrong type (``work_dir=3``, ``fuse='no'``, ``latency_input='abc'``) would otherwise surface
as a raw ``TypeError`` deep inside mmengine or torch, or, worse, run for minutes first. Each
public function is wrapped by :func:`checked`: its arguments are bound to its signature (an
unknown or missing argument is one error too) and each named one is checked against a small
set of kinds; the error is one :class:`~mmext.errors.ArgumentError` (a ``ConfigError`` and a
``TypeError``) naming the function, the argument, what it must be and what it got. ``None``
always passes (it means "the default" throughout mmext).
"""
import functools
import inspect
import numbers
import os

from mmext.errors import ArgumentError


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_path(v):
    return isinstance(v, (str, os.PathLike))


def _is_config(v):
    from mmengine.config import Config
    return _is_path(v) or isinstance(v, Config)


def _is_seq(v, item):
    return isinstance(v, (list, tuple)) and all(item(x) for x in v)


def _is_module(v):
    import torch
    return isinstance(v, torch.nn.Module)


def _is_shape(v):
    return _is_seq(v, _is_int) and len(v) == 4 and all(x > 0 for x in v)


def _is_size_pair(v):
    return _is_seq(v, _is_int) and len(v) == 2


#: kind -> (test, what it must be)
KINDS = {
    'bool': (lambda v: isinstance(v, bool), 'True or False'),
    'int': (_is_int, 'an integer'),
    'number': (_is_number, 'a number'),
    'str': (lambda v: isinstance(v, str), 'a string'),
    'path': (_is_path, 'a path (str or os.PathLike)'),
    'config': (_is_config, 'a config file path or an mmengine Config'),
    'dict': (lambda v: isinstance(v, dict), 'a dict'),
    'module': (_is_module, 'a torch.nn.Module'),
    'strs': (lambda v: isinstance(v, str) or _is_seq(v, lambda x: isinstance(x, str)),
             'a string or a list of strings'),
    'paths': (lambda v: _is_path(v) or _is_seq(v, _is_path), 'a path or a list of paths'),
    'ints': (lambda v: _is_int(v) or _is_seq(v, _is_int), 'an integer or a list of integers'),
    'arch': (lambda v: isinstance(v, (str, dict)), "an arch name (e.g. 's1') or a dict"),
    'resume': (lambda v: isinstance(v, bool) or _is_path(v),
               "True/'auto' (the latest checkpoint of the work dir), False, or a checkpoint path"),
    'shape': (_is_shape, 'a tuple of 4 positive integers (N, C, H, W)'),
    'sizes': (lambda v: _is_seq(v, _is_size_pair) and len(v) > 0,
              'a list of (H, W) pairs of integers, e.g. [(224, 224), (320, 480)]'),
}


def check_argument(function, name, value, kind):
    """Raise :class:`ArgumentError` unless ``value`` (not ``None``) is of ``kind``."""
    test, what = KINDS[kind]
    if value is None or test(value):
        return
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + '...'
    raise ArgumentError(f'{function}(): {name} must be {what}, not {type(value).__name__} '
                        f'{shown}.')


def checked(**kinds):
    """Decorator: check the arguments named in ``kinds`` (``name='kind'``, see :data:`KINDS`)
    on every call, and turn a call that does not fit the signature into one error."""
    def wrap(fn):
        signature = inspect.signature(fn)
        unknown = set(kinds) - set(signature.parameters)
        assert not unknown, f'{fn.__name__} has no arguments {unknown}'

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise ArgumentError(f'{fn.__name__}(): {exc}; its arguments are '
                                    f'{signature}.') from None
            for name, value in bound.arguments.items():
                if name in kinds:
                    check_argument(fn.__name__, name, value, kinds[name])
            return fn(*args, **kwargs)
        return wrapper
    return wrap
