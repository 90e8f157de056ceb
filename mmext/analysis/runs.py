"""Reading mmengine work dirs: the metrics of each run and which model it was.

What mmengine 0.10.7 leaves in a work dir (one ``<timestamp>/`` folder per run):

* ``<timestamp>/<timestamp>.json`` -- written by ``LoggerHook.after_test_epoch`` after
  ``Runner.test``: one JSON object with the test metrics (``coco/bbox_mAP``, ``coco/segm_mAP``
  ... as fractions for mmdet, ``mIoU``, ``aAcc``, ``mAcc`` in percent for mmseg);
* ``<timestamp>/vis_data/<timestamp>.json`` and ``vis_data/scalars.json`` -- one JSON object per
  line: training losses, and the validation metrics after each validation (training runs);
* ``<timestamp>/vis_data/config.py`` -- the full config of the run (which model it was);
* ``<timestamp>/<timestamp>.log`` -- the text log, with ``Epoch(test) ... coco/bbox_mAP: 0.3880``;
* ``<config name>.py`` in the work dir itself -- ``Runner.dump_config`` (every Runner, train or
  test) writes the config there under the name of the file it was started from.

:func:`collect_runs` reads these (the test JSON first, then the last validation entry, then the
text log) and names each run from its config (detector type, backbone type and arch), falling
back to the work dir's name. A run's ``config`` is the name of the dumped config file whose text
is the run's ``vis_data/config.py`` (else the only ``.py`` there, else the work dir's name, the
tools' default ``work_dirs/<config name>``): the key the detector benchmark is joined on.
"""
import json
import os
import os.path as osp
import re

from mmext.analysis.naming import identify_from_config, identify_from_path, pretty_backbone
from mmext.errors import ConfigError

_TS = re.compile(r'^\d{8}_\d{6}$')
_LOG_METRIC = re.compile(r'([A-Za-z0-9_]+/[A-Za-z0-9_]+|mIoU|mAcc|aAcc):\s*(-?[0-9.]+)')


def _load_run_config(run_dir):
    path = osp.join(run_dir, 'vis_data', 'config.py')
    if not osp.isfile(path):
        return None
    try:
        from mmengine.config import Config
        return Config.fromfile(path, import_custom_modules=False)
    except Exception:  # noqa: BLE001  (a config we cannot read: fall back to the path)
        return None


def normalise_metrics(raw):
    """``bbox_mAP`` / ``segm_mAP`` and ``mIoU``, all in percent.

    mmdet's ``CocoMetric`` reports fractions (0.388): always multiplied by 100. mmseg's
    ``IoUMetric`` reports percent already (41.25, and a poor model's 0.62 is 0.62 %): kept as is.
    """
    out = {}
    for key in ('bbox_mAP', 'segm_mAP'):
        for name in (f'coco/{key}', key):
            if isinstance(raw.get(name), (int, float)):
                out[key] = round(float(raw[name]) * 100, 2)
                break
    for name in ('mIoU', 'ade20k/mIoU', 'seg/mIoU'):
        if isinstance(raw.get(name), (int, float)):
            out['mIoU'] = round(float(raw[name]), 2)
            break
    return out


def _read_json_lines(path):
    entries = []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return entries
    try:  # the test JSON is one (possibly indented) object
        value = json.loads(text)
        return [value] if isinstance(value, dict) else [v for v in value if isinstance(v, dict)]
    except ValueError:
        pass
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries


def _metrics_from_log(path):
    """The last ``Epoch(test)`` (else ``Epoch(val)``/``Iter(val)``) metrics line of a text log."""
    found = {'test': None, 'val': None}
    try:
        with open(path, errors='replace') as f:
            for line in f:
                split = 'test' if '(test)' in line else 'val' if '(val)' in line else None
                if split is None:
                    continue
                values = {k: float(v) for k, v in _LOG_METRIC.findall(line)}
                if normalise_metrics(values):
                    found[split] = values
    except OSError:
        return None, None
    for split in ('test', 'val'):
        if found[split]:
            return found[split], split
    return None, None


def read_run(run_dir):
    """Metrics of one ``<work_dir>/<timestamp>`` folder: ``(metrics, split)`` or ``(None, None)``."""
    ts = osp.basename(osp.normpath(run_dir))
    test_json = osp.join(run_dir, f'{ts}.json')
    if osp.isfile(test_json):
        for entry in reversed(_read_json_lines(test_json)):
            metrics = normalise_metrics(entry)
            if metrics:
                return metrics, 'test'
    for name in (f'{ts}.json', 'scalars.json'):
        path = osp.join(run_dir, 'vis_data', name)
        if osp.isfile(path):
            for entry in reversed(_read_json_lines(path)):
                metrics = normalise_metrics(entry)
                if metrics:
                    return metrics, 'val'
    log = osp.join(run_dir, f'{ts}.log')
    if osp.isfile(log):
        raw, split = _metrics_from_log(log)
        if raw:
            return normalise_metrics(raw), split
    return None, None


def collect_runs(work_dirs=('work_dirs', ), latest_only=True):
    """One row per work dir and model (its latest run with metrics; test preferred over
    validation). Runs of different models sharing a work dir (same config file name under
    different folders) are told apart by their recorded configs.

    ``work_dirs``: folders searched recursively for mmengine ``<timestamp>/`` run folders.
    ``latest_only=False`` keeps every run.
    """
    if isinstance(work_dirs, str):
        work_dirs = [work_dirs]
    runs = []
    for root in work_dirs:
        if not osp.isdir(root):
            raise ConfigError(f'work dir {root!r} does not exist.')
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            stamps = sorted(d for d in dirnames if _TS.match(d))
            found = []
            for ts in stamps:
                run_dir = osp.join(dirpath, ts)
                metrics, split = read_run(run_dir)
                if metrics:
                    found.append(_run_row(dirpath, ts, run_dir, metrics, split))
            if latest_only:
                latest = {}
                for row in found:  # timestamps ascend: later runs replace earlier ones
                    key = (row['backbone'], row['task'], row['dataset'], row['config'])
                    if row['split'] == 'test' or latest.get(key, {}).get('split') != 'test':
                        latest[key] = row
                found = list(latest.values())
            runs += found
    return runs


def run_config_name(dirpath, run_dir):
    """The stem of the config file a run was started from (see the module docstring)."""
    try:
        # a config without a file name is dumped as <timestamp>.py: no name to join on
        dumped = sorted(f for f in os.listdir(dirpath) if f.endswith('.py') and
                        not _TS.match(f[:-3]) and osp.isfile(osp.join(dirpath, f)))
    except OSError:
        dumped = []
    recorded = osp.join(run_dir, 'vis_data', 'config.py')
    if len(dumped) > 1 and osp.isfile(recorded):
        with open(recorded, errors='replace') as f:
            text = f.read()
        for name in dumped:
            with open(osp.join(dirpath, name), errors='replace') as f:
                if f.read() == text:
                    return name[:-3]
    if len(dumped) == 1:
        return dumped[0][:-3]
    return osp.basename(osp.normpath(dirpath))


def _run_row(dirpath, ts, run_dir, metrics, split):
    info = identify_from_path(dirpath)
    cfg = _load_run_config(run_dir)
    if cfg is not None:
        info.update(identify_from_config(cfg))
    row = dict(source='measured',
               model=pretty_backbone(info['backbone']) if 'backbone' in info
               else osp.basename(dirpath),
               backbone=info.get('backbone'), task=info.get('task', '?'),
               dataset=info.get('dataset'), config=run_config_name(dirpath, run_dir),
               split=split, work_dir=dirpath, timestamp=ts,
               reference=None)
    row.update(metrics)
    return row

