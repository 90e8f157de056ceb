"""Benchmark output: a JSON file of rows (with the environment) and a markdown table."""
import json
import os
import os.path as osp

from mmext.benchmark.environment import environment


MD_COLUMNS = [('arch', 'arch'), ('source', 'source'), ('mode', 'mode'),
              ('protocol', 'protocol'), ('device_name', 'device'), ('torch', 'torch'),
              ('batch', 'batch'), ('input_size', 'input'), ('amp', 'fp16'),
              ('threads', 'threads'), ('median_ms', 'median ms'), ('min_ms', 'min ms'),
              ('max_ms', 'max ms'), ('img_per_s', 'img/s'), ('ratio_vs_timm', 'mmext/timm'),
              ('max_rel_err', 'rel. err'), ('status', 'status')]


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f'{value:.3f}'.rstrip('0').rstrip('.') if abs(value) < 1 else f'{value:.2f}'
        return f'{value:.2e}'
    return str(value).replace('|', '\\|')


def to_markdown(rows, meta=None):
    """A markdown table of the rows (and a header with the environment)."""
    lines = ['# Backbone benchmark', '']
    if meta:
        for key in ('date', 'torch', 'cuda', 'gpu', 'cpu', 'timm', 'onnxruntime'):
            if meta.get(key):
                lines.append(f'- {key}: {meta[key]}')
        lines.append('')
    lines.append('| ' + ' | '.join(title for _, title in MD_COLUMNS) + ' |')
    lines.append('|' + '|'.join('---' for _ in MD_COLUMNS) + '|')
    for row in rows:
        lines.append('| ' + ' | '.join(_fmt(row.get(key)) for key, _ in MD_COLUMNS) + ' |')
    return '\n'.join(lines) + '\n'


def write_results(rows, json_path, md_path=None, meta=None):
    """Write ``{'meta': ..., 'rows': [...]}`` as JSON and the markdown table; returns the paths."""
    meta = dict(meta or environment())
    for path in (json_path, md_path):
        if path and osp.dirname(osp.abspath(path)):
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(json_path, 'w') as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1, default=_json_default)
    if md_path is None:
        md_path = osp.splitext(json_path)[0] + '.md'
    with open(md_path, 'w') as f:
        f.write(to_markdown(rows, meta))
    return json_path, md_path


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def load_results(path):
    """The rows of a benchmark JSON (``{'meta', 'rows'}`` or a plain list of rows)."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        return data.get('rows', [])
    return list(data)

