"""Checking ``--cfg-options`` keys against the config before they are merged.

mmengine's ``merge_from_dict`` adds any key it is given, so a typo (``train_cfg.max_epoch=1``)
creates a new, unused entry and the run silently uses the old value. mmext refuses such keys.

The rule, for an override ``a.b.c=v`` (and for every key of a dict value, recursively):

* every parent (``a``, ``a.b``) must exist; a list is entered by index (``pipeline.2.scale``);
* the key itself must exist, unless it is new where new keys are legitimate:

  - under a parent whose value is ``None`` or an empty dict (nothing to misspell);
  - under a registry ``type=`` dict (``model.backbone``, ``train_cfg``, ``optim_wrapper``, ...)
    whose class accepts that argument (by name, or through ``**kwargs``) -- the type is looked
    up in the config's codebase registries (mmdet or mmseg, then mmengine), with the override's
    own ``type`` when the same options change it;
  - at the top level, for the arguments mmengine's ``Runner`` reads (``randomness``,
    ``work_dir``, ``experiment_name``, ``compile``, ...);
  - under a dict without ``type=`` inside ``model``'s ``train_cfg``/``test_cfg`` (heads read
    those settings with ``cfg.get(key, default)``, e.g. ``model.test_cfg.min_bbox_size``; a
    typo there is not caught);
  - anywhere below a dict value that carries ``_delete_=True`` (it replaces the node).

A refused key raises :class:`~mmext.errors.ConfigError` naming the closest existing key.
"""
import difflib
import importlib
import inspect

from mmext.errors import ConfigError

_SPECIAL_KEYS = ('_delete_', '_scope_')
# Top-level keys Runner.from_cfg reads besides its constructor's arguments.
_RUNNER_CFG_KEYS = ('model_wrapper_cfg', 'find_unused_parameters', 'compile',
                    'activation_checkpointing', 'efficient_conv_bn_eval', 'runner_type',
                    'custom_imports', 'strategy', 'launcher', 'auto_scale_lr')


def _runner_keys():
    from mmengine.runner import Runner
    return set(inspect.signature(Runner.__init__).parameters) - {'self'} | set(_RUNNER_CFG_KEYS)


def flatten_keys(node, prefix=''):
    """Every dotted key of a config tree (dicts by key, lists by index), parents included."""
    keys = []
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, (list, tuple)) else ())
    for key, value in items:
        path = f'{prefix}{key}'
        keys.append(path)
        keys += flatten_keys(value, path + '.')
    return keys


def _registries(codebase):
    modules = ([f'{codebase}.registry'] if codebase else []) + ['mmengine.registry']
    found = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        from mmengine.registry import Registry
        found += [v for v in vars(module).values() if isinstance(v, Registry)]
    return found


def _accepts(type_name, arg, codebase):
    """Whether a class (or function) registered as ``type_name`` takes the argument ``arg``;
    None when no registry knows the type."""
    if not isinstance(type_name, str):
        target = type_name if callable(type_name) else None
        candidates = [target] if target else []
    else:
        candidates = []
        for registry in _registries(codebase):
            try:
                obj = registry.get(type_name)
            except Exception:  # a registry whose lazy import fails: not this one
                obj = None
            if obj is not None and obj not in candidates:
                candidates.append(obj)
    if not candidates:
        return None
    return any(_takes(obj, arg) for obj in candidates)


def _takes(obj, arg):
    """Whether ``obj(arg=...)`` is accepted: a named parameter, or ``**kwargs`` that reach one.

    A class whose ``__init__`` has ``**kwargs`` usually hands them to its base class, so the
    bases' ``__init__`` are checked in MRO order until one without ``**kwargs``.
    """
    inits = [k.__dict__['__init__'] for k in obj.__mro__ if '__init__' in k.__dict__] \
        if inspect.isclass(obj) else [obj]
    for init in inits:
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return True  # no signature to check against
        if any(p.name == arg and p.kind is not p.VAR_POSITIONAL for p in params):
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return False
    return True  # **kwargs all the way up


def _closest(path, known):
    match = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ''


def _child(node, part):
    """(exists, value) of ``part`` under ``node`` (a dict key or a list index)."""
    if isinstance(node, dict):
        return (part in node), node.get(part)
    if isinstance(node, (list, tuple)) and part.lstrip('-').isdigit():
        index = int(part)
        return (-len(node) <= index < len(node)), (node[index] if -len(node) <= index < len(node)
                                                   else None)
    return False, None


def _in_model_settings(path):
    parts = path.split('.')
    return parts[0] == 'model' and any(p in ('train_cfg', 'test_cfg') for p in parts[1:])


def _check_new_key(cfg, parent_path, parent, key, type_override, codebase):
    """None when ``key`` may be added under ``parent``, else the reason it may not."""
    if key in _SPECIAL_KEYS:
        return None
    if parent is None or (isinstance(parent, dict) and not parent):
        return None
    if not parent_path:
        return None if key in _runner_keys() else 'it is not a key mmengine\'s Runner reads'
    if not isinstance(parent, dict):
        return f"'{parent_path}' is a {type(parent).__name__}, not a dict"
    type_name = type_override if type_override is not None else parent.get('type')
    if type_name is None and _in_model_settings(parent_path):
        return None
    if type_name is None:
        return f"'{parent_path}' has no such key and no type= whose arguments would allow it"
    accepted = _accepts(type_name, key, codebase)
    if accepted is None:
        return None  # a type no registry here knows: leave it to the build
    if not accepted:
        name = type_name if isinstance(type_name, str) else getattr(type_name, '__name__', '?')
        return f'{name} takes no argument {key!r}'
    return None


def _flat_options(options, prefix=''):
    flat = {}
    for key, value in options.items():
        path = f'{prefix}{key}'
        flat[path] = value
        if isinstance(value, dict):
            flat.update(_flat_options(value, path + '.'))
    return flat


def check_cfg_options(cfg, options, codebase=None):
    """Raise :class:`ConfigError` for an override key the rule above does not allow."""
    options = dict(options)
    cfg = cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg  # an mmengine Config -> its dict
    known = flatten_keys(cfg)
    types = {path[:-len('.type')]: value for path, value in _flat_options(options).items()
             if path.endswith('.type')}
    for full_key, value in options.items():
        _check_path(cfg, str(full_key).split('.'), value, types, codebase, known)


def _check_path(cfg, parts, value, types, codebase, known):
    node, path = cfg, ''
    for part in parts:
        exists, child = _child(node, part)
        if not exists:
            parent_path = path.rstrip('.')
            reason = _check_new_key(cfg, parent_path, node, part, types.get(parent_path),
                                    codebase)
            if reason is None:
                return  # a legitimate new key: everything below it is new as well
            full = '.'.join(parts)
            raise ConfigError(
                f"--cfg-options key '{full}' is not in the config ({reason})"
                f"{_closest(full, known)} (a new key must be an argument of its parent's type=; "
                "fix the name, or add the key to your config file)")
        node, path = child, f'{path}{part}.'
    if isinstance(value, dict) and isinstance(node, dict) and not value.get('_delete_'):
        for key, sub in value.items():
            _check_path(cfg, parts + [str(key)], sub, types, codebase, known)
