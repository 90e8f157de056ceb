"""The accuracy-vs-latency plot (matplotlib) and its Pareto frontier.

One panel per task and metric. Its x axis is the backbone latency (``latency_ms``), except for
the tasks of :data:`~mmext.analysis.naming.DETECTOR_LATENCY_TASKS` (RTMDet, YOLOX) when some row
of theirs has a whole-detector latency (``detector_ms``): those are plotted against that.
Measured runs are blue dots with their Pareto frontier; reference rows (the papers', mmdet's
model zoo) are hollow squares, labelled with where their number comes from.
"""
from mmext.analysis.naming import DETECTOR_LATENCY_TASKS, PANELS

METRICS = ('bbox_mAP', 'segm_mAP', 'mIoU')
METRIC_TITLES = dict(bbox_mAP='box AP', segm_mAP='mask AP', mIoU='mIoU')
X_TITLES = dict(latency_ms='backbone latency (ms)', detector_ms='detector latency (ms)')
REFERENCE_STYLE = {'paper': ('tab:red', 'paper (A100, 512x512)'),
                   'mmdet': ('tab:green', 'mmdet model zoo')}


def x_key(rows, task):
    """``'latency_ms'``, or ``'detector_ms'`` for RTMDet/YOLOX panels with a detector latency
    (or with no latency at all)."""
    mine = [r for r in rows if r.get('task') == task]
    if task in DETECTOR_LATENCY_TASKS and (any(r.get('detector_ms') for r in mine) or
                                           not any(r.get('latency_ms') for r in mine)):
        return 'detector_ms'
    return 'latency_ms'


def pareto_front(points):
    """Points ``(latency, accuracy, ...)`` not beaten by a faster-or-equal, more accurate one."""
    front, best = [], float('-inf')
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def plot_panels(rows):
    """``[(task, metric, x key), ...]``: the panels :func:`plot` draws for ``rows``, in order."""
    panels = [(task, metric) for task, metric in PANELS
              if any(r.get('task') == task and r.get(metric) is not None for r in rows)]
    extra = sorted({(r.get('task'), m) for r in rows for m in METRICS
                    if r.get(m) is not None} - set(PANELS))
    panels += [p for p in extra if p[0]]
    # a panel with nothing to draw (reference rows without a latency, no run) is left out
    panels = [p for p in panels if any(
        r.get('task') == p[0] and r.get(p[1]) is not None and
        (r.get('source') == 'measured' or r.get(x_key(rows, p[0]))) for r in rows)]
    if not panels:
        return [('no results', 'bbox_mAP', 'latency_ms')]
    return [(task, metric, x_key(rows, task)) for task, metric in panels]


def plot(rows, path, title=None):
    """Accuracy against latency, one panel per task and metric; returns ``path``."""
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    panels = plot_panels(rows)
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (task, metric, xk) in zip(axes.flat, panels):
        chosen = [r for r in rows if r.get('task') == task and r.get(metric) is not None]
        placed = [r for r in chosen if r.get(xk)]
        measured = [(r[xk], r[metric], r['model']) for r in placed if r['source'] == 'measured']
        references = {}
        for r in placed:
            if r['source'] != 'measured':
                references.setdefault(r['source'], []).append((r[xk], r[metric], r['model']))
        if measured:
            ax.scatter([p[0] for p in measured], [p[1] for p in measured], marker='o',
                       color='tab:blue', label='measured', zorder=3)
            front = pareto_front(measured)
            ax.step([p[0] for p in front], [p[1] for p in front], where='post',
                    color='tab:blue', alpha=0.5, label='Pareto frontier (measured)')
            for x, y, name in measured:
                ax.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        for source, points in sorted(references.items()):
            color, label = REFERENCE_STYLE.get(source, ('tab:gray', source))
            if xk == 'detector_ms' and source == 'mmdet':
                label = 'mmdet model zoo AP, timed here'
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker='s',
                       facecolors='none', edgecolors=color, label=label, zorder=3)
            for x, y, name in points:
                ax.annotate(f'{name} ({source})', (x, y), textcoords='offset points',
                            xytext=(4, -10), fontsize=8, color=color)
        paper = [p for points in references.values() for p in points]
        unplaced = sorted({f'{r["model"]} ({r["source"]}): {r[metric]:.1f}' for r in chosen
                           if not r.get(xk)})
        if unplaced:
            ax.text(0.01, 0.99, 'no latency: ' + '; '.join(unplaced), transform=ax.transAxes,
                    fontsize=7, va='top', wrap=True)
        xs = [p[0] for p in measured + paper]
        if xs and max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale('log')
        ax.set_title(f'{task}: {METRIC_TITLES.get(metric, metric)}')
        ax.set_xlabel(X_TITLES[xk])
        ax.set_ylabel(METRIC_TITLES.get(metric, metric))
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.2, y=0.15)  # room for the point labels
        if measured or paper:
            ax.legend(fontsize=7, loc='best', framealpha=0.6)
    settings = sorted({r[k] for r in rows for k in ('latency_setting', 'detector_setting')
                       if r.get(k) and r['source'] == 'measured'})
    fig.suptitle(title or ('Accuracy vs latency' +
                           (f' (measured: {"; ".join(settings)})' if settings else '')),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

