"""Accuracy against backbone latency: test results from ``work_dirs`` plus benchmark timings.

What mmengine 0.10.7 leaves in a work dir (one ``<timestamp>/`` folder per run):

* ``<timestamp>/<timestamp>.json`` -- written by ``LoggerHook.after_test_epoch`` after
  ``Runner.test``: one JSON object with the test metrics (``coco/bbox_mAP``, ``coco/segm_mAP``
  ... as fractions for mmdet, ``mIoU``, ``aAcc``, ``mAcc`` in percent for mmseg);
* ``<timestamp>/vis_data/<timestamp>.json`` and ``vis_data/scalars.json`` -- one JSON object per
  line: training losses, and the validation metrics after each validation (training runs);
* ``<timestamp>/vis_data/config.py`` -- the full config of the run (which model it was);
* ``<timestamp>/<timestamp>.log`` -- the text log, with ``Epoch(test) ... coco/bbox_mAP: 0.3880``.

:func:`collect_runs` reads these (the test JSON first, then the last validation entry, then the
text log) and names each run from its config (detector type, backbone type and arch), falling
back to the work dir's name. :func:`summarize` joins the runs with a benchmark JSON
(:mod:`mmext.benchmark`) on the backbone, adds the papers' reported numbers as labelled
reference rows, and writes a markdown table, a CSV and a PNG plot of accuracy against backbone
latency (the Pareto frontier of the measured runs drawn per task).
"""
import csv
import json
import os
import os.path as osp
import re

from mmext.errors import ConfigError

# The papers' reported numbers (COCO val2017 / ADE20K val), as reference rows.
PAPER_RESULTS = [
    dict(model='SHViT-S4', backbone='shvit_s4', task='RetinaNet', dataset='COCO',
         bbox_mAP=38.8, reference='SHViT paper (CVPR 2024)'),
    dict(model='SHViT-S4', backbone='shvit_s4', task='Mask R-CNN', dataset='COCO',
         bbox_mAP=39.0, segm_mAP=35.9, reference='SHViT paper (CVPR 2024)'),
    dict(model='EfficientFormer-L1', backbone='efficientformer_l1', task='Mask R-CNN',
         dataset='COCO', bbox_mAP=37.9, segm_mAP=35.4,
         reference='EfficientFormer paper (NeurIPS 2022)'),
    dict(model='EfficientFormerV2-S2', backbone='efficientformerv2_s2', task='Mask R-CNN',
         dataset='COCO', bbox_mAP=43.4, segm_mAP=39.5,
         reference='EfficientFormerV2 paper (ICCV 2023)'),
    dict(model='EfficientFormerV2-S2', backbone='efficientformerv2_s2', task='Semantic FPN',
         dataset='ADE20K', mIoU=42.4, reference='EfficientFormerV2 paper (ICCV 2023)'),
    dict(model='EdgeViT-XXS', backbone='edgevit_xxs', task='RetinaNet', dataset='COCO',
         bbox_mAP=38.7, reference='EdgeViT paper (ECCV 2022)'),
]
# Backbone latency at 512x512 on an A100, as the SHViT paper reports it (ms).
PAPER_LATENCY = dict(shvit_s4=0.28, efficientformer_l1=0.84, edgevit_xxs=0.88)
PAPER_LATENCY_SETTING = 'A100, 512x512 (SHViT paper)'

METRICS = ('bbox_mAP', 'segm_mAP', 'mIoU')
METRIC_TITLES = dict(bbox_mAP='box AP', segm_mAP='mask AP', mIoU='mIoU')
# Which metric each task is plotted by.
PANELS = [('RetinaNet', 'bbox_mAP'), ('Mask R-CNN', 'bbox_mAP'), ('Mask R-CNN', 'segm_mAP'),
          ('Semantic FPN', 'mIoU')]
TASK_NAMES = {'RetinaNet': 'RetinaNet', 'MaskRCNN': 'Mask R-CNN', 'FasterRCNN': 'Faster R-CNN',
              'CascadeRCNN': 'Cascade R-CNN', 'FCOS': 'FCOS', 'ATSS': 'ATSS'}
TASK_DIRS = {'retinanet': 'RetinaNet', 'mask_rcnn': 'Mask R-CNN', 'maskrcnn': 'Mask R-CNN',
             'semfpn': 'Semantic FPN', 'sem_fpn': 'Semantic FPN'}
FAMILY_NAMES = {'shvit': 'SHViT', 'efficientformer': 'EfficientFormer',
                'efficientformerv2': 'EfficientFormerV2', 'edgevit': 'EdgeViT'}
LATENCY_PROTOCOLS = ('gpu_latency_seg', 'cpu_latency_seg', 'gpu_latency_det', 'cpu_latency_det',
                     'gpu_throughput', 'cpu_throughput')
COLUMNS = ['source', 'model', 'task', 'dataset', 'bbox_mAP', 'segm_mAP', 'mIoU', 'latency_ms',
           'latency_setting', 'split', 'work_dir', 'timestamp', 'reference']
COLUMN_TITLES = dict(source='source', model='model', task='task', dataset='dataset',
                     bbox_mAP='box AP', segm_mAP='mask AP', mIoU='mIoU',
                     latency_ms='backbone latency (ms)', latency_setting='latency setting',
                     split='split', work_dir='work dir', timestamp='run', reference='reference')

_TS = re.compile(r'^\d{8}_\d{6}$')
_LOG_METRIC = re.compile(r'([A-Za-z0-9_]+/[A-Za-z0-9_]+|mIoU|mAcc|aAcc):\s*(-?[0-9.]+)')


# ------------------------------------------------------------------------------------ naming
def pretty_backbone(key):
    """``'shvit_s4'`` -> ``'SHViT-S4'``."""
    family, _, arch = key.rpartition('_')
    return f'{FAMILY_NAMES.get(family, family)}-{arch.upper()}' if family else key


def backbone_key(type_name, arch):
    type_name = str(type_name).split('.')[-1]
    return f'{type_name.lower()}_{str(arch).lower()}'


def _identify_from_config(cfg):
    model = cfg.get('model') or {}
    model_type = str(model.get('type', '')).split('.')[-1]
    backbone = model.get('backbone') or {}
    info = {}
    if backbone.get('type') and isinstance(backbone.get('arch'), str):
        info['backbone'] = backbone_key(backbone['type'], backbone['arch'])
    if model_type in ('EncoderDecoder', 'CascadeEncoderDecoder'):
        head = str((model.get('decode_head') or {}).get('type', ''))
        info['task'] = 'Semantic FPN' if head.endswith('FPNHead') else \
            (head.replace('Head', '') or 'segmentation')
    elif model_type:
        info['task'] = TASK_NAMES.get(model_type, model_type)
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    dataset = str((loader.get('dataset') or {}).get('type', ''))
    if 'ADE' in dataset:
        info['dataset'] = 'ADE20K'
    elif 'Coco' in dataset or 'COCO' in dataset:
        info['dataset'] = 'COCO'
    elif dataset:
        info['dataset'] = dataset
    return info


def _identify_from_path(work_dir):
    info = {}
    name = osp.basename(osp.normpath(work_dir)).lower()
    match = re.match(r'(efficientformerv2|efficientformer|shvit|edgevit)_([a-z0-9]+)', name)
    if match:
        info['backbone'] = f'{match.group(1)}_{match.group(2)}'
    for part in osp.normpath(work_dir).lower().split(os.sep):
        if part in TASK_DIRS:
            info['task'] = TASK_DIRS[part]
    for word, task in (('retinanet', 'RetinaNet'), ('mask_rcnn', 'Mask R-CNN'),
                       ('semfpn', 'Semantic FPN')):
        if word in name:
            info['task'] = task
    if 'coco' in name:
        info['dataset'] = 'COCO'
    elif 'ade' in name:
        info['dataset'] = 'ADE20K'
    return info


def _load_run_config(run_dir):
    path = osp.join(run_dir, 'vis_data', 'config.py')
    if not osp.isfile(path):
        return None
    try:
        from mmengine.config import Config
        return Config.fromfile(path, import_custom_modules=False)
    except Exception:  # noqa: BLE001  (a config we cannot read: fall back to the path)
        return None


# ------------------------------------------------------------------------------------ metrics
def normalise_metrics(raw):
    """``bbox_mAP`` / ``segm_mAP`` in percent (mmdet reports fractions) and ``mIoU`` (percent)."""
    out = {}
    for key in ('bbox_mAP', 'segm_mAP'):
        for name in (f'coco/{key}', key):
            if isinstance(raw.get(name), (int, float)):
                value = float(raw[name])
                out[key] = round(value * 100 if value <= 1.0 else value, 2)
                break
    for name in ('mIoU', 'ade20k/mIoU', 'seg/mIoU'):
        if isinstance(raw.get(name), (int, float)):
            value = float(raw[name])
            out['mIoU'] = round(value * 100 if value <= 1.0 else value, 2)
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
                    key = (row['backbone'], row['task'], row['dataset'])
                    if row['split'] == 'test' or latest.get(key, {}).get('split') != 'test':
                        latest[key] = row
                found = list(latest.values())
            runs += found
    return runs


def _run_row(dirpath, ts, run_dir, metrics, split):
    info = _identify_from_path(dirpath)
    cfg = _load_run_config(run_dir)
    if cfg is not None:
        info.update(_identify_from_config(cfg))
    row = dict(source='measured',
               model=pretty_backbone(info['backbone']) if 'backbone' in info
               else osp.basename(dirpath),
               backbone=info.get('backbone'), task=info.get('task', '?'),
               dataset=info.get('dataset'), split=split, work_dir=dirpath, timestamp=ts,
               reference=None)
    row.update(metrics)
    return row


# ------------------------------------------------------------------------------------ latency
def load_benchmark_rows(paths):
    from mmext.benchmark.report import load_results
    if not paths:
        return []
    if isinstance(paths, str):
        paths = [paths]
    rows = []
    for path in paths:
        if not osp.isfile(path):
            raise ConfigError(f'benchmark JSON {path!r} does not exist (write one with '
                              'tools/benchmark_backbone.py).')
        rows += load_results(path)
    return rows


def latency_table(bench_rows, protocol=None, mode='deploy'):
    """``backbone -> (median ms, setting)`` from benchmark rows of one protocol and mode.

    ``protocol=None`` takes the first of :data:`LATENCY_PROTOCOLS` with results; a backbone
    without a ``mode`` row falls back to its ``eager`` row.
    """
    ok = [r for r in bench_rows if r.get('source', 'mmext') == 'mmext' and
          r.get('status') == 'ok' and r.get('median_ms') is not None]
    protocols = [protocol] if protocol else \
        [p for p in LATENCY_PROTOCOLS if any(r['protocol'] == p for r in ok)] + \
        sorted({r['protocol'] for r in ok} - set(LATENCY_PROTOCOLS))
    if not protocols:
        return {}
    chosen = protocols[0]
    table = {}
    for wanted in (mode, 'eager'):
        for r in ok:
            if r['protocol'] == chosen and r['mode'] == wanted and r['arch'] not in table:
                setting = (f'{r.get("device_name", r.get("device"))}, {chosen}, '
                           f'b{r["batch"]} {r["input_size"]}, {r["mode"]}')
                table[r['arch']] = (r['median_ms'], setting)
    return table


# ------------------------------------------------------------------------------------ tables
def paper_rows():
    rows = []
    for ref in PAPER_RESULTS:
        row = dict(source='paper', split='reported', work_dir=None, timestamp=None, **ref)
        if ref['backbone'] in PAPER_LATENCY:
            row['latency_ms'] = PAPER_LATENCY[ref['backbone']]
            row['latency_setting'] = PAPER_LATENCY_SETTING
        rows.append(row)
    return rows


def build_rows(runs, bench_rows=(), latency_protocol=None, latency_mode='deploy',
               include_paper=True):
    latency = latency_table(list(bench_rows), latency_protocol, latency_mode)
    rows = []
    for run in runs:
        row = dict(run)
        if row.get('backbone') in latency:
            row['latency_ms'], row['latency_setting'] = latency[row['backbone']]
        rows.append(row)
    if include_paper:
        rows += paper_rows()
    return rows


def _cell(value):
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.3f}' if value < 10 else f'{value:.1f}'
    return str(value)


def to_markdown(rows):
    lines = ['# Accuracy and backbone latency', '',
             'Measured rows: test (or last validation) metrics from the work dirs; latency from '
             'the benchmark JSON. Paper rows: the numbers the papers report (latency: '
             f'{PAPER_LATENCY_SETTING}).', '']
    lines.append('| ' + ' | '.join(COLUMN_TITLES[c] for c in COLUMNS) + ' |')
    lines.append('|' + '|'.join('---' for _ in COLUMNS) + '|')
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(row.get(c)).replace('|', '\\|') for c in COLUMNS)
                     + ' |')
    return '\n'.join(lines) + '\n'


def write_csv(rows, path):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in COLUMNS})
    return path


def pareto_front(points):
    """Points ``(latency, accuracy, ...)`` not beaten by a faster-or-equal, more accurate one."""
    front, best = [], float('-inf')
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def plot(rows, path, title=None):
    """Accuracy against backbone latency, one panel per task and metric; returns ``path``."""
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    panels = [(task, metric) for task, metric in PANELS
              if any(r.get('task') == task and r.get(metric) is not None for r in rows)]
    extra = sorted({(r.get('task'), m) for r in rows for m in METRICS
                    if r.get(m) is not None} - set(PANELS))
    panels += [p for p in extra if p[0]]
    if not panels:
        panels = [('no results', 'bbox_mAP')]
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (task, metric) in zip(axes.flat, panels):
        chosen = [r for r in rows if r.get('task') == task and r.get(metric) is not None]
        placed = [r for r in chosen if r.get('latency_ms')]
        measured = [(r['latency_ms'], r[metric], r['model']) for r in placed
                    if r['source'] == 'measured']
        paper = [(r['latency_ms'], r[metric], r['model']) for r in placed if r['source'] == 'paper']
        if measured:
            ax.scatter([p[0] for p in measured], [p[1] for p in measured], marker='o',
                       color='tab:blue', label='measured', zorder=3)
            front = pareto_front(measured)
            ax.step([p[0] for p in front], [p[1] for p in front], where='post',
                    color='tab:blue', alpha=0.5, label='Pareto frontier (measured)')
            for x, y, name in measured:
                ax.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        if paper:
            ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker='s',
                       facecolors='none', edgecolors='tab:red', label='paper (A100, 512x512)',
                       zorder=3)
            for x, y, name in paper:
                ax.annotate(f'{name} (paper)', (x, y), textcoords='offset points',
                            xytext=(4, -10), fontsize=8, color='tab:red')
        unplaced = sorted({f'{r["model"]} ({r["source"]}): {r[metric]:.1f}' for r in chosen
                           if not r.get('latency_ms')})
        if unplaced:
            ax.text(0.01, 0.99, 'no latency: ' + '; '.join(unplaced), transform=ax.transAxes,
                    fontsize=7, va='top', wrap=True)
        xs = [p[0] for p in measured + paper]
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale('log')
        ax.set_title(f'{task}: {METRIC_TITLES.get(metric, metric)}')
        ax.set_xlabel('backbone latency (ms)')
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.2, y=0.15)  # room for the point labels
        if measured or paper:
            ax.legend(fontsize=7, loc='best', framealpha=0.6)
    settings = sorted({r['latency_setting'] for r in rows
                       if r.get('latency_setting') and r['source'] == 'measured'})
    fig.suptitle(title or ('Accuracy vs backbone latency' +
                           (f' (measured: {"; ".join(settings)})' if settings else '')),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summarize(work_dirs=('work_dirs', ), benchmark=None, out_dir='work_dirs/summary',
              latency_protocol=None, latency_mode='deploy', include_paper=True,
              latest_only=True, make_plot=True):
    """Collect results and write ``summary.md``, ``summary.csv`` and ``summary.png``.

    Args:
        work_dirs: folders with mmengine runs (searched recursively).
        benchmark: benchmark JSON file(s) from ``tools/benchmark_backbone.py``.
        out_dir: where the three files go.
        latency_protocol, latency_mode: which benchmark rows give the latency (default: the
            first protocol of :data:`LATENCY_PROTOCOLS` present, ``deploy`` mode).
        include_paper (bool): add the papers' numbers as reference rows.

    Returns:
        dict: ``rows`` and the paths ``markdown``, ``csv``, ``png`` (``None`` without a plot).
    """
    runs = collect_runs(work_dirs, latest_only=latest_only) if work_dirs else []
    rows = build_rows(runs, load_benchmark_rows(benchmark), latency_protocol, latency_mode,
                      include_paper)
    os.makedirs(out_dir, exist_ok=True)
    md_path = osp.join(out_dir, 'summary.md')
    with open(md_path, 'w') as f:
        f.write(to_markdown(rows))
    csv_path = write_csv(rows, osp.join(out_dir, 'summary.csv'))
    png_path = plot(rows, osp.join(out_dir, 'summary.png')) if make_plot else None
    return dict(rows=rows, markdown=md_path, csv=csv_path, png=png_path)


__all__ = ['summarize', 'collect_runs', 'read_run', 'build_rows', 'latency_table', 'plot',
           'to_markdown', 'write_csv', 'paper_rows', 'PAPER_RESULTS', 'PAPER_LATENCY',
           'pareto_front']
