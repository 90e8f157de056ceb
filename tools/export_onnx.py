"""Export an mmext backbone, BatchNorms folded, to ONNX with dynamic batch/height/width, and
check it against PyTorch in ONNX Runtime at two input sizes.

Example:

    python tools/export_onnx.py SHViT s4 work_dirs/onnx/shvit_s4.onnx \
        --checkpoint checkpoints/shvit_s4.pth --sizes 224x224 800x1216

Outputs are named level<i> for each returned stage i. Without --checkpoint the weights are random
(fine to check the graph, not for deployment).

The output must end in .onnx and must not exist (--force replaces it). The graph is written to a
temporary file next to it and renamed only after ONNX Runtime's outputs matched PyTorch's within
--tol at every size: a failed export or check leaves no file and an existing output untouched.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import ConfigError, run_cli  # noqa: E402


def _size(text):
    parts = text.lower().replace('*', 'x').split('x')
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f'a size is HxW (e.g. 320x480) or one number, not {text!r}')
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('type', help='backbone type, e.g. SHViT, EfficientFormer')
    parser.add_argument('arch', help='arch, e.g. s4, l1')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--checkpoint', help='ImageNet weights (any layout mmext converts)')
    parser.add_argument('--sizes', nargs='+', default=['224x224', '320x480'],
                        help='input sizes HxW: traced at the first, verified at all')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--exporter', default='auto', choices=['auto', 'torchscript', 'dynamo'])
    parser.add_argument('--tol', type=float, default=1e-4, help='largest relative error allowed')
    parser.add_argument('--static', action='store_true', help='fixed input shape (first size)')
    parser.add_argument('--force', action='store_true', help='replace an existing .onnx file')
    args = parser.parse_args(argv)
    if not 0 <= args.tol < float('inf'):
        raise ConfigError(f'--tol must be a number >= 0, not {args.tol:g}.')

    from mmext.apis import export_backbone
    info = export_backbone(args.type, args.arch, args.out, checkpoint=args.checkpoint,
                           sizes=[_size(s) for s in args.sizes], opset=args.opset,
                           exporter=args.exporter, tol=args.tol, dynamic=not args.static,
                           force=args.force)
    print(f'wrote {info["path"]} ({info["exporter"]} exporter, opset {info["opset"]}, outputs '
          f'{", ".join(info["output_names"])})')
    for size, err in info['errors'].items():
        print(f'  {size}: max relative error {err["max_rel_err"]:.2e}, max absolute error '
              f'{err["max_abs_err"]:.2e}')
    if not args.checkpoint:
        print('note: random weights (no --checkpoint)')


if __name__ == '__main__':
    run_cli(main)
