"""Parameters and GMACs of an mmext backbone or of a detection/segmentation config's model.

Examples:

    python tools/get_flops.py --backbone SHViT --arch s4 --shape 224
    python tools/get_flops.py configs/retinanet/shvit_s4_fpn_1x_coco.py --shape 800 1280
    python tools/get_flops.py configs/semfpn/shvit_s4_fpn_40k_ade20k.py --part model

MACs count convolutions, linear layers, matrix products and attention (norms excluded, as the
papers count them). --shape is H W (or one number for a square); the default is 224 for a
backbone, 800x1280 for mmdet configs and 512x512 for mmseg configs. Sizes must be positive, and
a size whose forward pass would not fit in this machine's available memory is refused with the
estimate (see mmext/analysis/flops.py); count at a smaller size instead.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import run_cli  # noqa: E402


def main(argv=None):
    from mmengine.config import DictAction

    from mmext.analysis.flops import PARTS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='an mmdet or mmseg config file')
    parser.add_argument('--backbone', help='backbone type instead of a config, e.g. SHViT')
    parser.add_argument('--arch', help='backbone arch, e.g. s4')
    parser.add_argument('--shape', type=int, nargs='+', default=None, help='input H W')
    parser.add_argument('--part', default=None, choices=PARTS,
                        help='what to count for a config (default backbone+neck)')
    parser.add_argument('--count-norms', action='store_true', help='count norm layers too')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values, as in tools/train.py')
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    args = parser.parse_args(argv)

    from mmext.analysis.flops import format_complexity, get_flops
    result = get_flops(config=args.config, type=args.backbone, arch=args.arch,
                       input_size=args.shape, part=args.part, cfg_options=args.cfg_options,
                       count_norms=args.count_norms)
    print(json.dumps(result, indent=1) if args.json else format_complexity(result))


if __name__ == '__main__':
    run_cli(main)
