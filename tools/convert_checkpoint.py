"""Convert an ImageNet checkpoint (the authors', timm's, mmpretrain's or mmext's layout; .pth or
.safetensors; a path or an http(s) URL) to mmext's own layout.

The output holds tensors only ({'state_dict': ..., 'meta': ...}) and loads with
torch.load(weights_only=True). Example:

    python tools/convert_checkpoint.py shvit_s4.pth checkpoints/shvit_s4.pth --model SHViT --arch s4

The output must not exist (--force replaces it) and is never the input, not even with --force.
It is written to a temporary file next to it and renamed into place once complete: a failed
conversion or a full disk leaves no partial file and an existing output as it was.

tools/download_weights.py does this for the released weights the configs use.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.checkpoints import LAYOUTS, convert_checkpoint  # noqa: E402
from mmext.errors import ConfigError, run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint to convert (path or URL)')
    parser.add_argument('dst', help='where to write the mmext checkpoint')
    parser.add_argument('--model', required=True, help=f'backbone family: {", ".join(LAYOUTS)}')
    parser.add_argument('--arch', help='verify by loading into this arch (recommended)')
    parser.add_argument('--force', action='store_true',
                        help='replace dst if it exists (never when it is src)')
    args = parser.parse_args(argv)
    family = {name.lower(): name for name in LAYOUTS}.get(args.model.lower())
    if family is None:
        raise ConfigError(f'Unknown --model {args.model!r}; choose one of {", ".join(LAYOUTS)}.')
    layout, count = convert_checkpoint(args.src, args.dst, family, arch=args.arch,
                                      force=args.force)
    print(f'{args.src}: {layout} layout -> {args.dst} ({count} tensors, mmext layout)')


if __name__ == '__main__':
    run_cli(main)
