"""The backbone benchmark's CPU rows on several torch stacks (Python environments), interleaved.

Example (both of ``make test``'s environments, after ``make install`` and
``make install TORCH=2.1.2``):

    python tools/benchmark_stacks.py --python .venv/bin/python \\
        --python .venv-torch2.1.2/bin/python --archs shvit_s1 efficientformer_l1 \\
        --rounds 3 --out docs/benchmarks/cpu_1thread_torch_stacks.json
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.benchmark.stacks import compare_stacks, write_comparison  # noqa: E402
from mmext.errors import MmextError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--python', action='append', required=True,
                        help='an interpreter of one stack (give two or more)')
    parser.add_argument('--archs', nargs='+', default=['shvit_s1'])
    parser.add_argument('--protocol', default='cpu_throughput')
    parser.add_argument('--modes', nargs='+', default=['eager', 'deploy', 'bf16'])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--tiny', action='store_true', help='a seconds-long smoke run')
    parser.add_argument('--out', required=True, help='JSON file (markdown beside it)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    extra = ['--tiny', '--no-peaks'] if args.tiny else []
    try:
        out_dir = osp.dirname(osp.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        rows, meta = compare_stacks(args.python, args.archs, args.protocol, args.modes,
                                    args.rounds, extra_args=extra, tmp_dir=out_dir)
        paths = write_comparison(rows, meta, args.out)
    except MmextError as exc:
        sys.exit(f'error: {exc}')
    print(f'wrote {paths[0]} and {paths[1]}')


if __name__ == '__main__':
    main()
