"""Download, verify and convert the ImageNet weights the configs use (mmext layout, tensors only).

    python tools/download_weights.py all --out checkpoints/
    python tools/download_weights.py shvit_s4 efficientformerv2_s0 --out /shared/weights

Each file is downloaded once into the cache ($MMEXT_CACHE_DIR, default torch hub's
checkpoints folder), checked against its known sha256, loaded into its backbone to verify it,
and written as <out>/<model>.pth. Point MMEXT_WEIGHTS_DIR at the --out folder on a machine
without internet and every config's pretrained URL is read from there. --mirror fetches the
files from another server (<mirror>/<file name>) instead of their canonical hosts.
"""
import argparse
import sys

from mmext.checkpoints.download import expand_names, prepare_weights
from mmext.checkpoints.zoo import ZOO
from mmext.errors import MmextError, run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', default=['all'],
                        help=f'model names or "all" (default): {", ".join(ZOO)}')
    parser.add_argument('--out', default='checkpoints', help='output folder (default checkpoints/)')
    parser.add_argument('--mirror', help='base URL to fetch the files from instead of their hosts')
    args = parser.parse_args(argv)
    failures = []
    for name in expand_names(args.models):
        try:
            path, layout, count = prepare_weights(name, args.out, mirror=args.mirror)
        except MmextError as exc:
            print(f'error: {name}: {exc}', file=sys.stderr)
            failures.append(name)
            continue
        print(f'{name}: {layout} layout -> {path} ({count} tensors, mmext layout)')
    if failures:
        raise MmextError(f'{len(failures)} of the requested models failed: {", ".join(failures)} '
                         f'(see the errors above).')


if __name__ == '__main__':
    run_cli(main)
