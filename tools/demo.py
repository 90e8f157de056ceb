"""``make demo``: train and evaluate Mask R-CNN + SHViT-S4 on generated data, on CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root data/demo/coco]
"""
import argparse
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmext.errors import MmextError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'),
                        help='logs and checkpoint')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'demo', 'coco'),
                        help='where the generated COCO-format data goes')
    parser.add_argument('--epochs', type=int, default=None, help='override the schedule')
    args = parser.parse_args(argv)
    settings = {} if args.epochs is None else dict(max_epochs=args.epochs)
    try:
        from mmext.apis import run_demo
        run_demo(work_dir=args.work_dir, data_root=args.data_root, **settings)
    except MmextError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
