"""The README and docs/ state facts that live elsewhere; these tests hold them to their sources.

- docs/model_zoo.md is generated from the metafiles (tools/gen_model_zoo.py --check);
- every figure of a table in docs/benchmarks.md equals the raw JSON in docs/benchmarks/ it came
  from (each table is preceded by a ``<!-- check ... -->`` line naming its file, rows and
  columns), and each table's section names the machine and the date of its file;
- the README's model table agrees with the metafiles, the papers' figures of the family
  manifest (mmext.models.families) and mmext.analysis.summarize; its versions and requirements agree with the Makefile,
  requirements/runtime.txt and setup.py;
- the commands the README and docs/ show exist: make targets and variables in the Makefile,
  ``--flags`` in the tool they are given to; relative links point at files.
No mmext model is built here; only the model table test imports mmext (its family manifest).
"""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = osp.join(REPO, 'docs')
BENCH = osp.join(DOCS, 'benchmarks')
GEN = osp.join(REPO, 'tools', 'gen_model_zoo.py')


def _read(*parts):
    with open(osp.join(REPO, *parts), encoding='utf-8') as f:
        return f.read()


def _doc_pages():
    pages = ['README.md']
    for dirpath, _, files in os.walk(DOCS):
        pages += [osp.relpath(osp.join(dirpath, f), REPO) for f in files if f.endswith('.md')]
    return sorted(pages)


# ----------------------------------------------------------------------------- model zoo
def _gen(*args, root=REPO):
    return subprocess.run([sys.executable, GEN, '--root', str(root), *args],
                          capture_output=True, text=True, timeout=120)


def test_model_zoo_is_generated_from_the_metafiles():
    proc = _gen('--check')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '' and proc.stderr == ''


def _copy_sources(dst):
    """model-index.yml, the metafiles it imports and docs/model_zoo.md under ``dst``."""
    shutil.copy(osp.join(REPO, 'model-index.yml'), dst / 'model-index.yml')
    index = yaml.safe_load(_read('model-index.yml'))
    for rel in index['Import']:
        (dst / osp.dirname(rel)).mkdir(parents=True, exist_ok=True)
        shutil.copy(osp.join(REPO, rel), dst / rel)
    (dst / 'docs').mkdir()
    shutil.copy(osp.join(DOCS, 'model_zoo.md'), dst / 'docs' / 'model_zoo.md')


def test_model_zoo_check_fails_in_one_line_when_out_of_date(tmp_path):
    _copy_sources(tmp_path)
    assert _gen('--check', root=tmp_path).returncode == 0
    # a hand edit of the page
    page = tmp_path / 'docs' / 'model_zoo.md'
    page.write_text(page.read_text().replace('16.139', '16.2'))
    proc = _gen('--check', root=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ''
    assert proc.stderr.count('\n') == 1 and 'out of date' in proc.stderr
    assert 'tools/gen_model_zoo.py' in proc.stderr
    # regenerating mends it; then a metafile change makes it stale again
    assert _gen(root=tmp_path).returncode == 0
    assert _gen('--check', root=tmp_path).returncode == 0
    meta = tmp_path / 'configs' / 'mask_rcnn' / 'metafile.yml'
    meta.write_text(meta.read_text().replace('box AP: 39.0', 'box AP: 39.1'))
    assert _gen('--check', root=tmp_path).returncode == 1
    page.unlink()
    proc = _gen('--check', root=tmp_path)
    assert proc.returncode == 1 and 'missing' in proc.stderr


def test_model_zoo_lists_every_config_of_every_metafile():
    page = _read('docs', 'model_zoo.md')
    index = yaml.safe_load(_read('model-index.yml'))
    for rel in index['Import']:
        for model in yaml.safe_load(_read(rel))['Models']:
            assert f"(../{model['Config']})" in page, model['Config']


# ----------------------------------------------------------------------------- benchmarks
_CHECK = re.compile(r'^<!-- check (.*?) -->$', re.M)


def _load_bench(name):
    with open(osp.join(BENCH, name), encoding='utf-8') as f:
        return json.load(f)


def _filters(spec):
    return [tuple(part.split(':', 1)) for part in spec.split('+')] if spec else []


def _matches(row, filters):
    return all(str(row.get(k)) == v for k, v in filters)


def _walk(obj, path):
    for part in path.split('.'):
        obj = obj[part]
    return obj


def _shown(cell):
    """``(value, tolerance)`` of a table cell as printed: '**96.2**', '1.2e-02', '35%', '2.70x'."""
    text = cell.replace('**', '').replace('`', '').strip()
    scale = 1.0
    if text.endswith('%'):
        text, scale = text[:-1], 0.01
    elif text.endswith('x'):
        text = text[:-1]
    mantissa, _, exponent = text.lower().partition('e')
    decimals = len(mantissa.partition('.')[2])
    tol = 0.5 * 10 ** -decimals * (10 ** int(exponent) if exponent else 1) * scale
    return float(text) * scale, tol + 1e-12


def _tables():
    """``[(spec dict, header cells, [row cells, ...], section text), ...]`` of benchmarks.md."""
    text = _read('docs', 'benchmarks.md')
    tables = []
    for m in _CHECK.finditer(text):
        spec = dict(tok.split('=', 1) for tok in m.group(1).split())
        lines = text[m.end():].lstrip('\n').splitlines()
        rows = []
        for line in lines:
            if not line.startswith('|'):
                break
            rows.append([c.strip() for c in line.strip().strip('|').split('|')])
        assert len(rows) >= 3 and set(rows[1][0]) <= set('-:'), f'no table after {m.group(0)}'
        heading = max(text.rfind('\n## ', 0, m.start()), text.rfind('\n### ', 0, m.start()))
        tables.append((spec, rows[0], rows[2:], ' '.join(text[heading:m.start()].split())))
    return tables


def _expected(spec, key, col):
    """The raw value behind the cell of row ``key``, column ``col`` (None: no such row)."""
    if 'path' in spec:
        if spec['key'] == 'file':
            return _walk(_load_bench(key), spec['path'])[col]
        return _walk(_load_bench(spec['file']), spec['path'])[col][key]
    rows = [r for r in _load_bench(spec['file'])['rows']
            if _matches(r, _filters(spec.get('where', '')))]
    field = spec['key']
    rows = [r for r in rows if str(r[field]) == key
            or (field == 'config' and osp.basename(r[field])[:-len('.py')] == key)]
    assert rows, f'{spec["file"]}: no row {field}={key}'
    filters, _, value = col.partition('@')
    value = value or 'median_ms'
    found = [r for r in rows if _matches(r, _filters(filters))
             and str(r.get('status', 'ok')).startswith('ok')]  # 'ok (latency only)': anchors
    if not found:
        return None
    if filters:
        assert len(found) == 1, f'{spec["file"]}: {key} {col} matches {len(found)} rows'
    assert len({json.dumps(r.get(value)) for r in found}) == 1, (key, col)
    return found[0].get(value)


def test_benchmark_tables_equal_their_json():
    tables = _tables()
    assert len(tables) >= 10
    checked = 0
    for spec, header, rows, _ in tables:
        cols = spec['cols'].split(',')
        assert len(header) == len(cols) + 1, (spec, header)
        for row in rows:
            assert len(row) == len(cols) + 1, (spec['cols'], row)
            key = row[0].replace('`', '').strip()
            for col, cell in zip(cols, row[1:]):
                if col == '-':
                    continue
                expected = _expected(spec, key, col)
                where = f'{spec.get("file", spec.get("path"))} {key} {col}'
                if expected is None:
                    assert cell == '-', f'{where}: no such row in the JSON, the table shows {cell}'
                    continue
                shown, tol = _shown(cell)
                assert abs(shown - expected) <= tol, f'{where}: table {cell}, JSON {expected}'
                checked += 1
    assert checked > 300


def test_every_raw_benchmark_file_has_a_checked_table():
    names = {spec['file'] for spec, *_ in _tables() if 'file' in spec}
    names |= {row[0].strip('`') for spec, _, rows, _ in _tables() if spec.get('key') == 'file'
              for row in rows}
    on_disk = {f for f in os.listdir(BENCH) if f.endswith('.json')}
    assert on_disk <= names, sorted(on_disk - names)
    text = _read('docs', 'benchmarks.md')
    for f in sorted(os.listdir(BENCH)):
        assert f'benchmarks/{f}' in text or f'benchmarks/{f[:-3]}' in text \
            or f'benchmarks/{f.rsplit(".", 1)[0]}.' in text, f'docs/benchmarks.md never links {f}'


def test_benchmark_sections_name_machine_and_date():
    for spec, _, _, section in _tables():
        if 'file' not in spec:
            continue
        data = _load_bench(spec['file'])
        if 'meta' not in data:  # a file without meta states date and machine in its note
            date = re.search(r'\d{4}-\d{2}-\d{2}', data['note']).group(0)
            assert date in section and 'Xeon' in data['note'] and 'Xeon' in section, spec
            continue
        meta = data['meta']
        assert meta['date'] in section, (spec['file'], meta['date'])
        if meta.get('cpu'):
            assert meta['cpu'] in section, (spec['file'], meta['cpu'])
        assert f"torch {meta['torch'].split('+')[0]}" in section, (spec['file'], meta['torch'])


# ----------------------------------------------------------------------------- README
def _readme_models():
    """``{'shvit_s4': {'params': '16.139', 'macs': '0.986', ...}, ...}`` from the README's
    model table (the rows whose second cell is an arch in backticks)."""
    text = _read('README.md')
    start = text.index('<!-- model table -->')
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if not line.startswith('|'):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        m = re.fullmatch(r'`(\w+)`', cells[0])
        if m:
            rows[m.group(1)] = cells
    return rows


def _metafile_params():
    params = {}
    for rel in yaml.safe_load(_read('model-index.yml'))['Import']:
        for model in yaml.safe_load(_read(rel))['Models']:
            md = model['Metadata']
            params[md['Backbone'].lower().replace('-', '_')] = md['Backbone Parameters (M)']
    return params


def _paper_tables():
    """``{'shvit_s4': Arch(dims=..., macs=...), ...}`` from the family manifest."""
    from mmext.models.families import arch_entries
    return {family.model_name(arch): spec for family, arch, spec in arch_entries()}


def test_readme_model_table_agrees_with_metafiles_papers_and_code():
    from mmext.analysis.summarize import PAPER_LATENCY, PAPER_RESULTS
    from mmext.models.families import family_by_prefix
    rows = _readme_models()
    params = _metafile_params()
    paper = _paper_tables()
    assert set(rows) == set(params) == set(paper)
    best = {}
    for r in PAPER_RESULTS:
        for metric in ('bbox_mAP', 'mIoU'):
            if r.get(metric) is not None:
                best.setdefault(r['backbone'], []).append(str(r[metric]))
    for name, cells in rows.items():
        # | `arch` | family | params | GMACs | channels | paper latency | paper results |
        assert cells[1] == family_by_prefix(name.rsplit('_', 1)[0]).name, name
        assert float(cells[2]) == params[name], name
        assert float(cells[3].split()[0]) == paper[name].macs, name
        if paper[name].cls_size != 224:
            assert cells[3].endswith(f'(at {paper[name].cls_size})'), name
        assert cells[4] == ', '.join(str(d) for d in paper[name].dims), name
        latency = PAPER_LATENCY.get(name)
        assert cells[5] == ('-' if latency is None else str(latency)), name
        shown = re.findall(r'[0-9]+\.[0-9]', cells[6])
        assert shown == best.get(name, []), name


def test_readme_names_the_supported_versions_of_setup_and_makefile():
    text = _read('README.md')
    makefile = _read('Makefile')
    default_torch = re.search(r'^TORCH\s*\?=\s*(\S+)', makefile, re.M).group(1)
    assert f'torch {default_torch}' in text
    for pin in re.findall(r'^(mmengine|mmcv|mmdet|mmsegmentation)==(\S+)',
                          _read('requirements', 'runtime.txt'), re.M):
        assert f'{pin[0]} {pin[1]}' in text, pin


def _setup_requirements():
    """``install_requires`` and ``extras_require`` of setup.py, read without running it."""
    import ast
    tree = ast.parse(_read('setup.py'))
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
               and getattr(n.func, 'id', None) == 'setup']
    kwargs = {k.arg: k.value for k in call.keywords}
    return (ast.literal_eval(kwargs['install_requires']),
            ast.literal_eval(kwargs['extras_require']))


def _short(spec):
    """``'mmcv>=2.0.0,<2.2.0'`` -> ``'mmcv>=2.0,<2.2'`` (how the README writes bounds)."""
    return re.sub(r'(\d+\.\d+)\.0\b', r'\1', spec)


def test_readme_install_requirements_match_setup():
    text = _read('README.md')
    requires, extras = _setup_requirements()
    for spec in requires:
        assert f'`{_short(spec)}`' in text, spec
    for extra in ('det', 'seg', 'deploy', 'openvino', 'all'):
        assert extra in extras and f'`[{extra}]`' in text, extra
    for spec in extras['det'] + extras['seg']:
        if re.match(r'(mmcv|mmdet|mmsegmentation)\b', spec):
            assert f'`{_short(spec)}`' in text, spec


# ----------------------------------------------------------------------------- commands
_FENCE = re.compile(r'```[\w-]*\n(.*?)```', re.S)


def _code_lines():
    """``(page, line)`` for every line of every fenced block and inline ``code`` span."""
    for page in _doc_pages():
        text = _read(page)
        blocks = _FENCE.findall(text)
        joined = []
        for block in blocks:
            joined += block.replace('\\\n', ' ').splitlines()
        inline = re.findall(r'`([^`\n]+)`', _FENCE.sub('', text))
        for line in joined + inline:
            yield page, line


def test_make_targets_and_variables_shown_exist():
    makefile = _read('Makefile')
    targets = set(re.findall(r'^([\w-]+):', makefile, re.M))
    variables = set(re.findall(r'^(\w+)\s*\??=', makefile, re.M))
    seen = set()
    for page, line in _code_lines():
        for m in re.finditer(r'\bmake((?:\s+[A-Z_]+=\S+|\s+[a-z][\w-]*)+)', line):
            for word in m.group(1).split():
                if '=' in word:
                    assert word.split('=')[0] in variables, (page, line)
                else:
                    assert word in targets, (page, line)
                seen.add(word.split('=')[0])
    assert {'demo', 'test', 'test-quick', 'TORCH', 'WHEELHOUSE'} <= seen


def _tool_flags(tool):
    with open(osp.join(REPO, 'tools', f'{tool}.py'), encoding='utf-8') as f:
        source = f.read()
    return set(re.findall(r"""['"](--[a-z][\w-]*)['"]""", source)), \
        'BooleanOptionalAction' in source


def test_tool_flags_shown_exist():
    checked = 0
    for page, line in _code_lines():
        for m in re.finditer(r'tools/(\w+)\.py\b([^|;&#]*)', line):
            tool = m.group(1)
            if not osp.isfile(osp.join(REPO, 'tools', f'{tool}.py')):
                continue  # e.g. mmdet's own tools/train.py
            flags, boolean = _tool_flags(tool)
            for flag in re.findall(r'(?<![\w-])(--[a-z][\w-]*)', m.group(2)):
                ok = flag in flags or (boolean and flag.startswith('--no-')
                                       and '--' + flag[5:] in flags)
                assert ok, f'{page}: {tool}.py has no {flag} ({line.strip()})'
                checked += 1
    assert checked > 20


def test_tools_and_scripts_named_exist():
    for page, line in _code_lines():
        for path in re.findall(r'(?<![\w/.])(tools/[\w.-]+\.(?:py|sh))', line):
            assert osp.isfile(osp.join(REPO, path)), (page, path)


def test_relative_links_resolve():
    for page in _doc_pages():
        base = osp.dirname(osp.join(REPO, page))
        for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', _read(page)):
            if re.match(r'[a-z]+:', target):
                continue
            assert osp.exists(osp.normpath(osp.join(base, target))), (page, target)
