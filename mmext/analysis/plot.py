"""The accuracy-vs-latency plot (matplotlib) and its Pareto frontier."""
from mmext.analysis.naming import PANELS

METRICS = ('bbox_mAP', 'segm_mAP', 'mIoU')
METRIC_TITLES = dict(bbox_mAP='box AP', segm_mAP='mask AP', mIoU='mIoU')


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

