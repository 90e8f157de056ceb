"""Write docs/model_zoo.md from the OpenMMLab metafiles (``model-index.yml`` and the
``configs/*/metafile.yml`` files it imports).

    python tools/gen_model_zoo.py            # (re)write docs/model_zoo.md
    python tools/gen_model_zoo.py --check    # exit 1 with one line if it is out of date

The page is generated, never edited by hand: change a metafile, then run this script.
``--check`` (run by tests/test_docs.py) compares the file with what the metafiles give now.
Needs only PyYAML (mmengine depends on it); it does not import mmext.
"""
import argparse
import os.path as osp
import sys

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_OUT = osp.join('docs', 'model_zoo.md')

#: Metadata keys shown as the "schedule" column, in this order of preference.
_SCHEDULE_KEYS = (('Epochs', '{} epochs'), ('Iterations', '{} iters'))
#: Result metrics as columns, in this order (metafile metric name -> column title).
_METRICS = (('box AP', 'box AP'), ('mask AP', 'mask AP'), ('mIoU', 'mIoU'))


def _load(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def load_metafiles(root=REPO):
    """``[(metafile path relative to root, its parsed content), ...]`` in model-index order."""
    index = _load(osp.join(root, 'model-index.yml'))
    return [(rel, _load(osp.join(root, rel))) for rel in index['Import']]


def _metrics(model):
    out = {}
    for result in model.get('Results') or []:
        out.update(result.get('Metrics') or {})
    return out


def _schedule(meta):
    for key, fmt in _SCHEDULE_KEYS:
        if key in meta:
            return fmt.format(meta[key])
    return '-'


def _weights_cell(url):
    """A link named by the file (or, for a Hugging Face hub file, by its repository)."""
    if not url:
        return 'none released'
    if '/resolve/' in url:  # https://huggingface.co/<org>/<repo>/resolve/main/<file>
        name = '/'.join(url.split('/resolve/')[0].split('/')[-2:])
    else:
        name = osp.basename(url)
    return f'[{name}]({url})'


def _backbone_table(metafiles):
    """One row per backbone (first appearance), with the configs that use it per collection."""
    backbones = {}
    for _, meta in metafiles:
        for model in meta['Models']:
            md = model['Metadata']
            entry = backbones.setdefault(md['Backbone'], dict(
                params=md['Backbone Parameters (M)'], weights=md.get('Pretrained Backbone'),
                paper=model.get('Paper') or {}))
            if md['Backbone Parameters (M)'] != entry['params']:
                raise ValueError(f"{md['Backbone']}: the metafiles give both {entry['params']} "
                                 f"and {md['Backbone Parameters (M)']} M parameters")
    lines = ['| backbone | params (M) | ImageNet weights | paper |', '|---|---|---|---|']
    for name, e in backbones.items():
        paper = e['paper']
        paper_cell = f"[{paper['Title']}]({paper['URL']})" if paper.get('URL') else '-'
        lines.append(f"| {name} | {e['params']:.3f} | {_weights_cell(e['weights'])} | "
                     f'{paper_cell} |')
    return lines


def _collection_section(rel, meta):
    folder = osp.dirname(rel)
    lines = []
    for coll in meta.get('Collections', []):
        name = coll['Name']
        models = [m for m in meta['Models'] if m['In Collection'] == name]
        cmeta = coll.get('Metadata') or {}
        paper = coll.get('Paper') or {}
        lines += ['', f'## {name}', '']
        facts = []
        if paper.get('URL'):
            facts.append(f"paper: [{paper['Title']}]({paper['URL']})")
        if cmeta.get('Training Data'):
            facts.append(f"data: {cmeta['Training Data']}")
        if cmeta.get('Architecture'):
            facts.append(f"architecture: {', '.join(cmeta['Architecture'])}")
        if cmeta.get('Training Techniques'):
            facts.append(f"training: {', '.join(cmeta['Training Techniques'])}")
        facts.append(f'configs: `{folder}/`, metafile: `{rel}`')
        lines += [f'- {f}' for f in facts]
        metric_cols = [(k, title) for k, title in _METRICS
                       if any(k in _metrics(m) for m in models)]
        has_width = any('Detector Width' in m['Metadata'] for m in models)
        head = ['config', 'backbone', 'backbone params (M)']
        head += ['width'] if has_width else []
        head += ['schedule']
        head += [f"{title} (backbone paper's)" for _, title in metric_cols]
        head += ['ImageNet weights']
        lines += ['', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for m in models:
            md = m['Metadata']
            config = m['Config']
            row = [f'[{osp.basename(config)[:-3]}](../{config})', md['Backbone'],
                   f"{md['Backbone Parameters (M)']:.3f}"]
            row += [md.get('Detector Width', '-')] if has_width else []
            row += [_schedule(md)]
            metrics = _metrics(m)
            row += [str(metrics[k]) if k in metrics else '-' for k, _ in metric_cols]
            row += [_weights_cell(md.get('Pretrained Backbone'))]
            lines.append('| ' + ' | '.join(row) + ' |')
    return lines


def render(root=REPO):
    """The whole page, as text."""
    metafiles = load_metafiles(root)
    n_models = sum(len(meta['Models']) for _, meta in metafiles)
    collections = [c['Name'] for _, meta in metafiles for c in meta.get('Collections', [])]
    lines = [
        '<!-- Generated by tools/gen_model_zoo.py from model-index.yml and configs/*/metafile.yml.',
        '     Do not edit: change a metafile and run `python tools/gen_model_zoo.py`. -->',
        '# Model zoo',
        '',
        f'{n_models} configs ({", ".join(collections)}) in {len(metafiles)} metafiles, listed by '
        '`model-index.yml` (what `mim` reads; a wheel carries both under `mmext/.mim/`).',
        '',
        'mmext releases no trained detector or segmentor weights: each config starts from its '
        "backbone's ImageNet checkpoint (the *ImageNet weights* column, downloaded on first use; "
        "see [get_started.md](get_started.md#pretrained-weights)). Where a result column appears, "
        "it is the number the backbone's paper reports for that detector or segmentor, as the "
        'metafiles record it, not a number mmext has reproduced. Parameters are the '
        "backbone's, without a classifier.",
        '',
        '## Backbones',
        '',
    ]
    lines += _backbone_table(metafiles)
    for rel, meta in metafiles:
        lines += _collection_section(rel, meta)
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true',
                        help='do not write; exit 1 if the file differs from the metafiles')
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help=f'the page to write or check, relative to --root ({DEFAULT_OUT})')
    parser.add_argument('--root', default=REPO, help='repository root (this checkout)')
    args = parser.parse_args(argv)
    text = render(args.root)
    path = args.out if osp.isabs(args.out) else osp.join(args.root, args.out)
    if args.check:
        try:
            with open(path, encoding='utf-8') as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            what = 'is missing' if current is None else 'is out of date with the metafiles'
            print(f'error: {args.out} {what}: run python tools/gen_model_zoo.py',
                  file=sys.stderr)
            return 1
        return 0
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
