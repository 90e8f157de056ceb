"""Convert an ImageNet checkpoint (the authors', timm's, mmpretrain's or mmext's layout; .pth or
.safetensors; a path or an http(s) URL) to mmext's own layout.

The output holds tensors only ({'state_dict': ..., 'meta': ...}) and loads with
torch.load(weights_only=True). Example:

    python tools/convert_checkpoint.py shvit_s4.pth checkpoints/shvit_s4.pth --model SHViT --arch s4

tools/download_weights.py does this for the released weights the configs use.
"""
import argparse

from mmext.checkpoints import LAYOUTS, convert_checkpoint
from mmext.errors import ConfigError, run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint to convert (path or URL)')
    parser.add_argument('dst', help='where to write the mmext checkpoint')
    parser.add_argument('--model', required=True, help=f'backbone family: {", ".join(LAYOUTS)}')
    parser.add_argument('--arch', help='verify by loading into this arch (recommended)')
    args = parser.parse_args(argv)
    family = {name.lower(): name for name in LAYOUTS}.get(args.model.lower())
    if family is None:
        raise ConfigError(f'Unknown --model {args.model!r}; choose one of {", ".join(LAYOUTS)}.')
    layout, count = convert_checkpoint(args.src, args.dst, family, arch=args.arch)
    print(f'{args.src}: {layout} layout -> {args.dst} ({count} tensors, mmext layout)')


if __name__ == '__main__':
    run_cli(main)
