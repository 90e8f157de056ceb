"""Download, verify and convert the ImageNet weights the configs use (mmext layout, tensors only).

    python tools/download_weights.py all --out checkpoints/
    python tools/download_weights.py shvit_s4 efficientformerv2_s0 --out /shared/weights

Each file is downloaded once into the cache ($MMEXT_CACHE_DIR, default torch hub's
checkpoints folder), checked against its known sha256, loaded into its backbone to verify it,
and written as <out>/<model>.pth. Point MMEXT_WEIGHTS_DIR at the --out folder on a machine
without internet and every config's pretrained URL is read from there. --mirror fetches the
files from another server (<mirror>/<file name>) instead of their canonical hosts.

An existing <out>/<model>.pth is kept (--force converts it again). A downloaded file that is
not a checkpoint (an HTML page, ...) or does not fit its model is named and never cached. A
download that has not finished after MMEXT_DOWNLOAD_DEADLINE seconds (default 3600) or
--deadline is abandoned; MMEXT_DOWNLOAD_TIMEOUT (default 10) bounds each connection and read.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.checkpoints.download import expand_names, prepare_weights  # noqa: E402
from mmext.checkpoints.files import writable_folder  # noqa: E402
from mmext.checkpoints.zoo import ZOO  # noqa: E402
from mmext.errors import ConfigError, MmextError, run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', default=['all'],
                        help=f'model names or "all" (default): {", ".join(ZOO)}')
    parser.add_argument('--out', default='checkpoints', help='output folder (default checkpoints/)')
    parser.add_argument('--mirror', help='base URL to fetch the files from instead of their hosts')
    parser.add_argument('--force', action='store_true',
                        help='convert again and replace <out>/<model>.pth files that exist')
    parser.add_argument('--deadline', type=float, default=None,
                        help='seconds a whole download may take (default: '
                        '$MMEXT_DOWNLOAD_DEADLINE or 3600)')
    args = parser.parse_args(argv)
    if args.deadline is not None and not 0 < args.deadline < float('inf'):
        raise ConfigError(f'--deadline must be a positive number of seconds, not '
                          f'{args.deadline:g}.')
    writable_folder(args.out, 'output folder (--out)')  # before any download
    names = expand_names(args.models)
    failures = []
    for name in names:
        try:
            path, layout, count = prepare_weights(name, args.out, mirror=args.mirror,
                                                  force=args.force, deadline=args.deadline)
        except MmextError as exc:
            if len(names) == 1:  # its own one error line
                raise
            print(f'error: {name}: {exc}', file=sys.stderr)
            failures.append(name)
            continue
        if layout is None:
            print(f'{name}: {path} exists; kept (--force converts it again)')
        else:
            print(f'{name}: {layout} layout -> {path} ({count} tensors, mmext layout)')
    if failures:
        raise MmextError(f'{len(failures)} of the requested models failed: {", ".join(failures)} '
                         f'(see the errors above).')


if __name__ == '__main__':
    run_cli(main)
