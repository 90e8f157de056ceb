"""Train a detector or segmentor from an mmdet/mmseg config (mmext backbones included).

    python tools/train.py configs/mask_rcnn/shvit_s4_fpn_1x_coco.py [--work-dir DIR]
        [--resume [CKPT] | --overwrite] [--amp] [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
        [--launcher none|pytorch|slurm] [--debug]

One run per work dir (a second live run on it is refused); --resume continues exactly where
the checkpoint left off (random states included), and is refused when there is no checkpoint.
A work dir holding another run's checkpoints is refused unless --resume or --overwrite.
Checkpoints are written whole or not at all (a full disk stops the run with one error). Bad
input ends in one `error: ...` line and exit code 2.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import DictAction  # noqa: E402

from mmext.errors import run_cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model with mmext backbones')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    start = parser.add_mutually_exclusive_group()
    start.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                       help='resume from CKPT, or without a value from the latest '
                       'checkpoint in the work dir')
    start.add_argument('--overwrite', action='store_true',
                       help='start a new run in a work dir that holds checkpoints of an earlier '
                       'one (they are overwritten as this run saves its own)')
    parser.add_argument('--amp', action='store_true', help='mixed precision (GPU only)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly to the actual total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher (dist_train.sh uses pytorch)')
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of an error (or set MMEXT_DEBUG=1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmext.apis import train
    train(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
          resume=args.resume if args.resume is not None else False,
          launcher=args.launcher, amp=args.amp, auto_scale_lr=args.auto_scale_lr,
          overwrite=args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
