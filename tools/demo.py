"""Train and evaluate a detector with an mmext backbone on generated data, on CPU (``make demo``).

    python tools/demo.py [--config CONFIG] [--epochs N] [--work-dir DIR] [--data-root DIR]

Without ``--config``: Mask R-CNN + SHViT-S4. Any mmext detection config works (mask_rcnn/,
retinanet/, rtmdet/, yolox/): its model is kept, data, image size and schedule are shrunk for a
CPU (see mmext.apis.demo). Prints ``mmext demo: bbox AP = ...`` and the backbone's latency.
Like tools/train.py it holds its work dir while it runs (a second run on it is refused).
"""
import argparse
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import DictAction  # noqa: E402

from mmext.errors import run_cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=None,
                        help='an mmext detection config (default: Mask R-CNN + SHViT-S4)')
    # relative to the current directory (the repository root for `make demo`), never to this
    # file's folder: from an installed wheel that is site-packages/mmext/.mim/tools
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                        help='logs and checkpoint (default: work_dirs/demo)')
    parser.add_argument('--data-root', default=osp.join('data', 'demo', 'coco'),
                        help='where the generated COCO-format data goes (default: data/demo/coco)')
    parser.add_argument('--epochs', type=int, default=None,
                        help="epochs (default: the detector's, see mmext.apis.demo.DETECTORS)")
    parser.add_argument('--batch-size', type=int, default=None, help='training batch size')
    parser.add_argument('--lr', type=float, default=None, help='peak learning rate')
    parser.add_argument('--img-size', type=int, default=None,
                        help='side of the generated square images')
    parser.add_argument('--num-train', type=int, default=None, help='training images')
    parser.add_argument('--num-val', type=int, default=None, help='validation images')
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of the generated data and of training (0)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='config overrides applied after the demo\'s (key=value)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    settings = dict(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    img_size=args.img_size, num_train=args.num_train, num_val=args.num_val,
                    seed=args.seed)
    from mmext.apis import run_demo
    run_demo(work_dir=args.work_dir, data_root=args.data_root, config=args.config,
             cfg_options=args.cfg_options, **settings)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
