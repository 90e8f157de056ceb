"""Accuracy against latency: test results from ``work_dirs`` plus benchmark timings.

:func:`summarize` reads the runs of the work dirs (:mod:`mmext.analysis.runs`), joins them with
backbone benchmark JSON (``tools/benchmark_backbone.py``) on the backbone (``shvit_s4`` ...) and
with detector benchmark JSON (``tools/benchmark_detector.py``) on the config name (whole-detector
``detector_ms`` of RTMDet/YOLOX runs; :mod:`mmext.analysis.detector_latency`), adds the papers'
and mmdet's reported numbers as labelled reference rows, and writes a markdown table, a CSV and a
PNG plot of accuracy against latency (:mod:`mmext.analysis.plot`; the Pareto frontier of the
measured runs per task; RTMDet/YOLOX panels against the detector's latency when it is known).
Names of families, tasks and datasets: :mod:`mmext.analysis.naming`.

No runs found is an error unless ``allow_empty=True`` (``--allow-empty``): a summary of the papers'
rows alone is rarely what was meant (a wrong ``--work-dirs``, or test runs not finished).
"""
import csv
import os
import os.path as osp

from mmext.analysis.detector_latency import (MMDET_REFERENCE, MMDET_RESULTS,  # noqa: F401
                                             check_choice, config_key,
                                             join_detector_latency, mmdet_rows,
                                             split_benchmark_files)
from mmext.analysis.naming import (TASK_DIRS, TASK_NAMES, family_names,  # noqa: F401
                                   pretty_backbone)
from mmext.analysis.plot import pareto_front, plot
from mmext.analysis.runs import _TS, collect_runs, normalise_metrics, read_run  # noqa: F401
from mmext.errors import ConfigError
from mmext.models.families import PAPER_LATENCY_SETTING, paper_latency, paper_results

# The papers' reported numbers (COCO val2017 / ADE20K val), as reference rows, and the backbone
# latencies the SHViT paper reports (A100, 512x512, ms): from the family manifest.
PAPER_RESULTS = paper_results()
PAPER_LATENCY = paper_latency()

LATENCY_PROTOCOLS = ('gpu_latency_seg', 'cpu_latency_seg', 'gpu_latency_det', 'cpu_latency_det',
                     'gpu_throughput', 'cpu_throughput')
COLUMNS = ['source', 'model', 'task', 'dataset', 'bbox_mAP', 'segm_mAP', 'mIoU', 'latency_ms',
           'latency_setting', 'detector_ms', 'detector_gflops', 'detector_setting', 'config',
           'split', 'work_dir', 'timestamp', 'reference']
COLUMN_TITLES = dict(source='source', model='model', task='task', dataset='dataset',
                     bbox_mAP='box AP', segm_mAP='mask AP', mIoU='mIoU',
                     latency_ms='backbone latency (ms)', latency_setting='latency setting',
                     detector_ms='detector latency (ms)', detector_gflops='detector GFLOPs',
                     detector_setting='detector latency setting', config='config',
                     split='split', work_dir='work dir', timestamp='run', reference='reference')



# ------------------------------------------------------------------------------------ latency
def load_benchmark_rows(paths):
    """The backbone rows of benchmark JSON files (:func:`mmext.benchmark.load_results`);
    detector benchmark files among them are left out (:func:`split_benchmark_files`)."""
    return split_benchmark_files(paths)[0]


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
def paper_rows(include_mmdet=True):
    """The papers' rows, then mmdet's own RTMDet/YOLOX rows (``include_mmdet``)."""
    rows = []
    for ref in PAPER_RESULTS:
        row = dict(source='paper', split='reported', work_dir=None, timestamp=None, **ref)
        if ref['backbone'] in PAPER_LATENCY:
            row['latency_ms'] = PAPER_LATENCY[ref['backbone']]
            row['latency_setting'] = PAPER_LATENCY_SETTING
        rows.append(row)
    return rows + (mmdet_rows() if include_mmdet else [])


def build_rows(runs, bench_rows=(), latency_protocol=None, latency_mode='deploy',
               include_paper=True, detector_rows=(), detector_part='network',
               detector_mode='deploy'):
    """Runs with their latencies, then the reference rows (``include_paper``).

    ``detector_rows``: detector benchmark rows, joined on the config name (their ``part`` and
    ``mode``, see :mod:`mmext.analysis.detector_latency`).
    """
    latency = latency_table(list(bench_rows), latency_protocol, latency_mode)
    rows = []
    for run in runs:
        row = dict(run)
        if row.get('backbone') in latency:
            row['latency_ms'], row['latency_setting'] = latency[row['backbone']]
        rows.append(row)
    if include_paper:
        rows += paper_rows()
    join_detector_latency(rows, list(detector_rows), detector_part, detector_mode)
    return rows


def _cell(value):
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.3f}' if value < 10 else f'{value:.1f}'
    return str(value)


def to_markdown(rows):
    lines = ['# Accuracy and latency', '',
             'Measured rows: test (or last validation) metrics from the work dirs; backbone '
             'latency from the backbone benchmark JSON, detector latency (whole detector, joined '
             'on the config name) from the detector benchmark JSON. Paper rows: the numbers the '
             f'papers report (latency: {PAPER_LATENCY_SETTING}). mmdet rows: {MMDET_REFERENCE} '
             '(detector latency: the benchmark of their mmdet:: configs, when given).', '']
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


def _output_dir(out_dir):
    """``out_dir``, created; a path that is a file (or cannot be created) is a ConfigError."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ConfigError(f'--out {out_dir!r} is an existing file, not a folder; give a folder '
                          'for summary.md, summary.csv and summary.png.')
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f'cannot create the output folder {out_dir!r} '
                          f'({exc.strerror or exc}); give another --out.') from None
    return out_dir


def _no_runs_message(work_dirs):
    where = ', '.join(map(str, work_dirs or [])) or '(no work dirs given)'
    return (f'no test or validation results found under {where}: a run is a '
            '<work_dir>/<timestamp>/ folder with the metrics tools/test.py (or a training run\'s '
            'validation) writes. Check --work-dirs, or pass --allow-empty (allow_empty=True) to '
            "write a summary of the papers' rows only.")


def summarize(work_dirs=('work_dirs', ), benchmark=None, out_dir='work_dirs/summary',
              latency_protocol=None, latency_mode='deploy', include_paper=True,
              latest_only=True, make_plot=True, allow_empty=False, detector_part='network',
              detector_mode='deploy'):
    """Collect results and write ``summary.md``, ``summary.csv`` and ``summary.png``.

    Args:
        work_dirs: folders with mmengine runs (searched recursively).
        benchmark: benchmark JSON file(s) from ``tools/benchmark_backbone.py`` and/or
            ``tools/benchmark_detector.py`` (told apart by their rows).
        out_dir: the folder the three files go into (created; an existing file is refused).
        latency_protocol, latency_mode: which benchmark rows give the latency (default: the
            first protocol of :data:`LATENCY_PROTOCOLS` present, ``deploy`` mode).
        detector_part, detector_mode: which detector benchmark rows give ``detector_ms``
            (``network`` and ``deploy``, falling back to ``eager``, by default).
        include_paper (bool): add the papers' and mmdet's numbers as reference rows.
        allow_empty (bool): write the summary even when no run has results (else ConfigError).

    Returns:
        dict: ``rows``, the paths ``markdown``, ``csv``, ``png`` (``None`` without a plot) and
        ``warnings`` (benchmark latencies that matched no run, ...).
    """
    if isinstance(work_dirs, str):
        work_dirs = [work_dirs]
    runs = collect_runs(work_dirs, latest_only=latest_only) if work_dirs else []
    if not runs and not allow_empty:
        raise ConfigError(_no_runs_message(work_dirs))
    check_choice(detector_part, detector_mode)
    bench_rows, detector_rows = split_benchmark_files(benchmark)
    _check_latency_choice(bench_rows, latency_protocol)
    rows = build_rows(runs, bench_rows, latency_protocol, latency_mode, include_paper,
                      detector_rows, detector_part, detector_mode)
    warnings = []
    if not runs:
        warnings.append(f'no runs with results under {", ".join(map(str, work_dirs or []))}; '
                        "the summary has the papers' rows only (--allow-empty).")
    elif bench_rows and not any(r.get('latency_ms') for r in rows[:len(runs)]):
        warnings.append('no measured run has a backbone the benchmark timed '
                        f'(runs: {", ".join(sorted({str(r["backbone"]) for r in runs}))}); '
                        'the latency column is empty.')
    if runs and detector_rows and not any(r.get('detector_ms') for r in rows[:len(runs)]):
        timed = sorted({config_key(r.get('config')) for r in detector_rows})
        warnings.append('no measured run has a config the detector benchmark timed (runs: '
                        f'{", ".join(sorted({str(r.get("config")) for r in runs}))}; timed: '
                        f'{", ".join(timed)}); the detector latency column is empty.')
    _output_dir(out_dir)
    md_path = osp.join(out_dir, 'summary.md')
    with open(md_path, 'w') as f:
        f.write(to_markdown(rows))
    csv_path = write_csv(rows, osp.join(out_dir, 'summary.csv'))
    png_path = plot(rows, osp.join(out_dir, 'summary.png')) if make_plot else None
    return dict(rows=rows, markdown=md_path, csv=csv_path, png=png_path, warnings=warnings)


def _check_latency_choice(bench_rows, protocol):
    if protocol and bench_rows and not any(r.get('protocol') == protocol for r in bench_rows):
        have = sorted({str(r.get('protocol')) for r in bench_rows})
        raise ConfigError(f'the benchmark JSON has no {protocol!r} rows (it has '
                          f'{", ".join(have)}); pick one of those for --latency-protocol.')


__all__ = ['summarize', 'collect_runs', 'read_run', 'build_rows', 'latency_table', 'plot',
           'to_markdown', 'write_csv', 'paper_rows', 'PAPER_RESULTS', 'PAPER_LATENCY',
           'pareto_front', 'load_benchmark_rows', 'MMDET_RESULTS']
