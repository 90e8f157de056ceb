"""Evaluate a trained checkpoint on a config's test set (bbox/segm AP or mIoU).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--fuse] [--bf16]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm] [--debug]

A checkpoint that does not fit the config's model (another arch, family or head size) is
refused before testing; one saved with a fused backbone (after switch_to_deploy) needs
--cfg-options model.backbone.deploy=True, and an unfused one for a deploy=True config is tested
without deploy=True and with --fuse (the error says which). Bad input ends in one
`error: ...` line and exit code 2.
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
    parser = argparse.ArgumentParser(description='Test a model with mmext backbones')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the logs go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--fuse', action='store_true',
                        help='fold BatchNorms and branches of the backbone before testing')
    parser.add_argument('--bf16', action='store_true',
                        help='test in fp32, then with backbone and neck in bf16 (CPUs with '
                        'AVX512-BF16/AMX, or CUDA); prints both metrics and the speed-up')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher (dist_test.sh uses pytorch)')
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of an error (or set MMEXT_DEBUG=1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmext.apis import test
    test(args.config, args.checkpoint, work_dir=args.work_dir,
         cfg_options=args.cfg_options, launcher=args.launcher, fuse=args.fuse,
         bf16=args.bf16)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
