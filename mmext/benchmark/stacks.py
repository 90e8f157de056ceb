"""The backbone benchmark on several Python environments (torch stacks), interleaved.

:func:`compare_stacks` runs ``tools/benchmark_backbone.py`` with each interpreter in turn, one
arch at a time and round after round (``A B A B ...``), so a machine that drifts affects every
stack alike; it pools each ``(arch, protocol, mode)``'s timed runs per stack and gives one row per
case with every stack's median, its fraction of that stack's GEMM peak (measured by each
subprocess at its start) and the ratio to the first stack.
"""
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile

from mmext.benchmark.report import markdown_table, write_json_and_markdown
from mmext.errors import ConfigError

TOOL = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                'benchmark_backbone.py')


def _stack_name(python):
    """``'torch 2.1.2'`` for an interpreter (asked in a subprocess)."""
    proc = subprocess.run([python, '-c', 'import torch; print(torch.__version__.split("+")[0])'],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise ConfigError(f'{python} cannot import torch: '
                          f'{(proc.stderr.strip().splitlines() or ["no output"])[-1]}')
    return f'torch {proc.stdout.strip()}'


def compare_stacks(pythons, archs, protocol='cpu_throughput', modes=('eager', 'deploy', 'bf16'),
                   rounds=3, extra_args=(), tool=TOOL, log=print, tmp_dir=None):
    """Rows ``{arch, protocol, mode, <stack> ms, <stack> of peak, <stack>/<first> ratio}``
    and the meta of every stack (see the module docstring). Each run's JSON goes to a temporary
    folder in ``tmp_dir`` (default: the system's), removed at the end."""
    if len(pythons) < 2:
        raise ConfigError('give at least two interpreters (--python A --python B) to compare')
    names = [_stack_name(p) for p in pythons]
    if len(set(names)) != len(names):
        names = [f'{n} [{i + 1}]' for i, n in enumerate(names)]
    pooled, metas = {}, {}
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix='.stacks-') as tmp:
        for r in range(rounds):
            for arch in archs:
                for python, name in zip(pythons, names):
                    out = osp.join(tmp, f'r{r}_{arch}_{names.index(name)}.json')
                    cmd = [python, tool, '--archs', arch, '--protocols', protocol,
                           '--modes', *modes, '--rounds', '1', '--no-timm', '--out', out,
                           *extra_args]
                    log(f'round {r + 1}/{rounds}: {arch} on {name}', flush=True)
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise ConfigError(f'{name}: benchmark_backbone.py failed: '
                                          f'{(proc.stderr.strip().splitlines() or [""])[-1]}')
                    with open(out, encoding='utf-8') as f:
                        data = json.load(f)
                    metas.setdefault(name, data['meta'])
                    for row in data['rows']:
                        key = (row['arch'], row['protocol'], row['mode'])
                        entry = pooled.setdefault(key, {}).setdefault(
                            name, dict(times=[], fractions=[], status=row['status']))
                        entry['times'] += row.get('times_ms') or []
                        if row.get('peak_fraction') is not None:
                            entry['fractions'].append(row['peak_fraction'])
                        if row['status'] != 'ok':
                            entry['status'] = row['status']
    rows = []
    for (arch, proto, mode), per_stack in pooled.items():
        base = None
        for name in names:
            entry = per_stack.get(name)
            ok = entry is not None and entry['status'] == 'ok' and bool(entry['times'])
            ms = statistics.median(entry['times']) if ok else None
            base = ms if name == names[0] else base
            rows.append(dict(
                arch=arch, protocol=proto, mode=mode, stack=name.replace(' ', '-'),
                torch=metas[name]['torch'], median_ms=ms,
                peak_fraction=(statistics.median(entry['fractions'])
                               if ok and entry['fractions'] else None),
                ratio=ms / base if ms is not None and base else None,
                runs=len(entry['times']) if entry else 0,
                status=entry['status'] if entry else 'not run'))
    first = metas[names[0]]
    meta = dict(stacks=[n.replace(' ', '-') for n in names], pythons=list(pythons),
                rounds=rounds, protocol=protocol, modes=list(modes),
                command=' '.join(['python', *sys.argv]), date=first.get('date'),
                cpu=first.get('cpu'), torch=first.get('torch'),
                per_stack={n.replace(' ', '-'): m for n, m in metas.items()})
    return rows, meta


def to_markdown(rows, meta):
    """One line per (arch, mode): each stack's median ms and fraction of its peak, and the
    ratio of each later stack's time to the first's."""
    names = meta['stacks']
    lines = ['# Backbone benchmark on several torch stacks (interleaved)', '',
             f'- date: {meta.get("date")}', f'- cpu: {meta.get("cpu")}',
             f'- protocol: {meta["protocol"]}, {meta["rounds"]} interleaved rounds',
             f'- command: `{meta["command"]}`']
    for name in names:
        for key, p in (meta['per_stack'][name].get('peaks') or {}).items():
            lines.append(f'- {name} GEMM peak ({key}): fp32 {p.get("fp32")} GFLOP/s, '
                         f'bf16 {p.get("bf16")} GFLOP/s')
    lines.append('')
    wide = {}
    for row in rows:
        line = wide.setdefault((row['arch'], row['mode']),
                               dict(arch=row['arch'], mode=row['mode']))
        name = row['stack']
        line[f'{name} ms'] = row['median_ms'] if row['status'] == 'ok' else row['status']
        line[f'{name} of peak'] = row['peak_fraction']
        if name != names[0]:
            line[f'{name} / {names[0]}'] = row['ratio']
    columns = [('arch', 'arch'), ('mode', 'mode')]
    for name in names:
        columns += [(f'{name} ms', f'{name} ms'), (f'{name} of peak', f'{name} of peak')]
    columns += [(f'{n} / {names[0]}', f'{n} / {names[0]}') for n in names[1:]]
    lines += markdown_table(list(wide.values()), columns)
    return '\n'.join(lines) + '\n'


def write_comparison(rows, meta, json_path, md_path=None):
    return write_json_and_markdown(rows, meta, json_path, md_path, markdown=to_markdown,
                                   default_name='stacks.json')


__all__ = ['compare_stacks', 'write_comparison', 'to_markdown']
