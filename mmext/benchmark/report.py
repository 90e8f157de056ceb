"""Benchmark output: a JSON file of rows (with the environment) and a markdown table.

:func:`output_paths` checks where they go before a benchmark runs (``--out`` may name a folder:
the default file name goes into it), so results are never lost to an unwritable path at the end;
both files are written atomically (complete or not at all, see :mod:`mmext.checkpoints.files`).
"""
import json
import os
import os.path as osp

from mmext.benchmark.environment import environment
from mmext.checkpoints.files import check_output_file, write_text
from mmext.errors import ConfigError, OutputError


MD_COLUMNS = [('arch', 'arch'), ('source', 'source'), ('mode', 'mode'),
              ('protocol', 'protocol'), ('device_name', 'device'), ('torch', 'torch'),
              ('batch', 'batch'), ('input_size', 'input'), ('amp', 'fp16'),
              ('threads', 'threads'), ('median_ms', 'median ms'), ('min_ms', 'min ms'),
              ('max_ms', 'max ms'), ('img_per_s', 'img/s'), ('ratio_vs_timm', 'mmext/timm'),
              ('max_rel_err', 'rel. err'), ('gflops_s', 'GFLOP/s'),
              ('peak_fraction', 'of peak'), ('cosine_min', 'cos min'), ('status', 'status')]


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
        for key in ('date', 'torch', 'cuda', 'gpu', 'cpu', 'timm', 'onnxruntime', 'malloc'):
            if meta.get(key):
                lines.append(f'- {key}: {meta[key]}')
        for key, p in (meta.get('peaks') or {}).items():
            lines.append(f'- GEMM peak ({key}, {p.get("n")}^3): fp32 {p.get("fp32")} GFLOP/s, '
                         f'bf16 {p.get("bf16")} GFLOP/s, int8 {p.get("int8")} GOP/s')
        lines.append('')
    lines += markdown_table(rows, MD_COLUMNS)
    return '\n'.join(lines) + '\n'


def markdown_table(rows, columns):
    """The lines of a markdown table: ``columns`` are ``(row key, title)`` pairs."""
    lines = ['| ' + ' | '.join(title for _, title in columns) + ' |',
             '|' + '|'.join('---' for _ in columns) + '|']
    lines += ['| ' + ' | '.join(_fmt(row.get(key)) for key, _ in columns) + ' |' for row in rows]
    return lines


def output_paths(json_path, md_path=None, default_name='benchmark.json'):
    """The JSON and markdown paths a benchmark writes, checked (before it runs): ``json_path`` is
    a ``.json`` file or a folder (an existing one, or a path ending in ``/``) that gets
    ``default_name``; ``md_path`` defaults to the JSON path with ``.md``. Both folders are
    created and must be writable; an existing file is replaced, a folder is refused."""
    json_path = os.path.expanduser(os.fspath(json_path))
    if osp.isdir(json_path) or json_path.endswith(('/', os.sep)):
        json_path = osp.join(json_path, default_name)
    if not json_path.lower().endswith('.json'):
        raise OutputError(f'--out {json_path!r} does not end in .json; give a .json file name or '
                          'a folder (nothing is written over another kind of file).')
    stem = osp.splitext(json_path)[0]
    md_path = stem + '.md' if md_path is None else os.path.expanduser(os.fspath(md_path))
    if osp.isdir(md_path):
        md_path = osp.join(md_path, osp.basename(stem) + '.md')
    if not md_path.lower().endswith('.md'):
        raise OutputError(f'--md {md_path!r} does not end in .md; give a .md file name.')
    json_path = check_output_file(json_path, force=True, what='benchmark JSON (--out)')
    md_path = check_output_file(md_path, force=True, what='markdown table (--md)')
    return json_path, md_path


def write_json_and_markdown(rows, meta, json_path, md_path=None, markdown=None,
                            default_name='benchmark.json'):
    """Write ``{'meta': ..., 'rows': [...]}`` as JSON and ``markdown(rows, meta)`` beside it
    (``md_path``, default: the JSON path with ``.md``); returns the paths. ``json_path`` may
    be a folder (see :func:`output_paths`)."""
    json_path, md_path = output_paths(json_path, md_path, default_name)
    text = json.dumps(dict(meta=meta, rows=rows), indent=1, default=_json_default)
    write_text(json_path, text, what='benchmark JSON')
    write_text(md_path, (markdown or to_markdown)(rows, meta), what='markdown table')
    return json_path, md_path


def usable_cores():
    """CPU cores this process may run on (its affinity mask; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_warning(threads, flag='--threads'):
    """A one-line warning when ``threads`` exceeds :func:`usable_cores`, else ``None``."""
    cores = usable_cores()
    if threads is None or threads <= cores:
        return None
    return (f'{flag} {threads} is more than the {cores} CPU cores this process can use: the '
            'threads share cores, so timings measure contention, not the model; use at most '
            f'{flag} {cores}.')


def write_results(rows, json_path, md_path=None, meta=None):
    """Write ``{'meta': ..., 'rows': [...]}`` as JSON and the markdown table; returns the paths."""
    return write_json_and_markdown(rows, dict(meta or environment()), json_path, md_path)


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


#: What every benchmark row has (``tools/benchmark_backbone.py`` writes these).
ROW_KEYS = ('arch', 'source', 'mode', 'protocol', 'batch', 'input_size', 'median_ms', 'status')


def load_results(path):
    """The rows of a benchmark JSON (``{'meta', 'rows'}`` or a plain list of rows).

    A missing file, a file that is not JSON, or JSON that is not a list of benchmark rows (dicts
    with :data:`ROW_KEYS`) raises :class:`ConfigError` naming the file and what is wrong.
    """
    hint = 'write one with tools/benchmark_backbone.py'
    if not osp.isfile(path):
        raise ConfigError(f'benchmark JSON {path!r} does not exist ({hint}).')
    try:
        with open(path) as f:
            data = json.load(f)
    except UnicodeDecodeError:
        raise ConfigError(f'{path!r} is not a benchmark JSON (not text); {hint}.') from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f'{path!r} is not a benchmark JSON (invalid JSON at line {exc.lineno}'
                          f', column {exc.colno}: {exc.msg}); {hint}.') from None
    rows = data.get('rows') if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ConfigError(f'{path!r} is not a benchmark JSON: expected {{"meta": ..., "rows": '
                          f'[...]}} or a list of rows, found {_describe(data)}; {hint}.')
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in row] if isinstance(row, dict) else ROW_KEYS
        if missing:
            raise ConfigError(f'{path!r} is not a benchmark JSON: row {i} ({_describe(row)}) '
                              f'lacks {", ".join(missing)}; {hint}.')
    return rows


def _describe(value):
    if isinstance(value, dict):
        keys = ', '.join(map(str, list(value)[:5]))
        return f'an object with keys {keys or "(none)"}'
    return f'{type(value).__name__} {str(value)[:40]}'
