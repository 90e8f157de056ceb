"""Printing a run's metrics: every metric, then one headline line (bbox/segm AP or mIoU)."""

# ------------------------------------------------------------------------------------ metrics
def format_metrics(metrics, title='metrics'):
    """A readable block: one ``name: value`` line per metric."""
    if not metrics:
        return f'{title}: (none)'
    width = max(len(str(k)) for k in metrics)
    lines = [f'{title}:']
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f'{value:.4f}'
        lines.append(f'  {str(key).ljust(width)}  {value}')
    return '\n'.join(lines)


_HEADLINE_NAMES = {'coco/bbox_mAP': 'bbox AP', 'coco/segm_mAP': 'segm AP', 'mIoU': 'mIoU'}


def print_metrics(metrics, title, rank=None):
    """Print every metric, then a one-line summary (bbox/segm AP or mIoU); rank 0 only
    (``rank``: the runner's, which stays right after the process group is gone)."""
    from mmengine.dist import get_rank
    if (get_rank() if rank is None else rank) != 0:
        return
    print(format_metrics(metrics, title), flush=True)
    summary = [f'{name} {metrics[key]:.4f}' if isinstance(metrics[key], float)
               else f'{name} {metrics[key]}'
               for key, name in _HEADLINE_NAMES.items() if key in (metrics or {})]
    if summary:
        print('mmext: ' + ', '.join(summary), flush=True)
