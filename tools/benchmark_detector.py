"""Time complete detectors built from configs, mmext's and mmdet's own, in one run: the network
(backbone + neck + head on a tensor) and predict (with post-processing), with the backbone eager
and fused (deploy), and with --modes bf16 backbone and neck in bf16, in interleaved rounds; params
and GFLOPs (mmengine's FlopAnalyzer) per config. See mmext/benchmark/detector.py.

Examples:

    python tools/benchmark_detector.py configs/rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py \
        mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py --out work_dirs/bench/det.json
    # CPU, one thread (the default), 3 runs x 2 rounds after 1 warm-up, 640x640 (the default)
    python tools/benchmark_detector.py configs/rtmdet/*.py --warmup 1 --iters 3 --rounds 2
    # bf16 too (a CPU with AVX512-BF16/AMX, or CUDA)
    python tools/benchmark_detector.py configs/rtmdet/edgevit_xxs_rtmdet_tiny_4xb32-100e_coco.py \
        mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py --modes eager deploy bf16
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='detector config files, or mmdet::<path> for mmdet\'s own')
    parser.add_argument('--shape', nargs='+', type=int, default=[640, 640], metavar='N',
                        help='input H W (default 640 640)')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (default 1)')
    parser.add_argument('--iters', type=int, default=3, help='timed runs per round (default 3)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='interleaved rounds over all cases (default 2)')
    parser.add_argument('--out', default='work_dirs/benchmark/detectors.json',
                        help='JSON file to write (the markdown table goes beside it, .md), or a '
                        'folder to write detectors.json into')
    parser.add_argument('--modes', nargs='+', default=['eager', 'deploy'],
                        help='eager, deploy, bf16 (backbone and neck in bf16, heads float32; '
                        'native bf16 only) or all (default: eager deploy)')
    args = parser.parse_args(argv)
    from mmext.benchmark.detector import (check_shape, resolve_detector_modes,
                                          run_detector_benchmark, to_markdown,
                                          write_detector_results)
    from mmext.benchmark.report import output_paths, threads_warning
    shape = check_shape(tuple(args.shape))
    modes = resolve_detector_modes(args.modes)  # an unknown mode: an error before any build
    json_path, _ = output_paths(args.out, None, 'detectors.json')  # before any timing
    warning = threads_warning(args.threads)
    if warning:
        print(f'warning: {warning}', file=sys.stderr, flush=True)
    rows = run_detector_benchmark(args.configs, shape, args.device, args.threads, args.warmup,
                                  args.iters, args.rounds, modes=modes)
    meta = dict(shape=f'{shape[0]}x{shape[1]}', threads=args.threads, warmup=args.warmup,
                iters=args.iters, rounds=args.rounds, modes=' '.join(modes))
    json_path, md_path = write_detector_results(rows, json_path, meta)
    print(to_markdown(rows, meta))
    print(f'wrote {json_path} and {md_path}')


if __name__ == '__main__':
    run_cli(main)
