"""Time backbones: GPU/CPU throughput and latency in eager, deploy, channels_last, bf16,
torch.compile, CUDA-graph, ONNX Runtime (fp32 and static int8) and OpenVINO modes (see
mmext/benchmark/protocols.py for the protocols). Each run first measures this machine's fp32,
bf16 and int8 GEMM peaks; rows give GFLOP/s and their fraction of the peak of their precision.

Examples:

    # the SHViT paper's GPU protocols for every backbone, default GPU modes
    python tools/benchmark_backbone.py --out work_dirs/bench/gpu.json
    # SHViT-S1 and S4 on the CPU (one thread), eager vs deploy vs ONNX Runtime
    python tools/benchmark_backbone.py --archs shvit_s1 shvit_s4 --protocols cpu \
        --modes eager deploy onnxruntime --out work_dirs/bench/cpu.json
    # every mode this machine supports, 3 interleaved rounds, int8 calibrated on your images
    python tools/benchmark_backbone.py --archs shvit_s1 --protocols cpu_throughput \
        --modes all --rounds 3 --calib-dir data/coco/val2017 --out work_dirs/bench/all.json
    # a seconds-long smoke run
    python tools/benchmark_backbone.py --archs shvit_s1 --tiny --out /tmp/bench.json
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import ConfigError, run_cli  # noqa: E402


def main(argv=None):
    from mmext.benchmark import ARCHS, MODES, PROTOCOLS
    from mmext.benchmark.protocols import FAMILIES
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=['all'],
                        help=f'archs ({", ".join(ARCHS)}), families ({", ".join(FAMILIES)}) '
                        'or all (default)')
    parser.add_argument('--protocols', nargs='+', default=None,
                        help=f'{", ".join(PROTOCOLS)}, cpu, gpu or all (default: gpu with CUDA, '
                        'else cpu)')
    parser.add_argument('--modes', nargs='+', default=None,
                        help=f'{", ".join(MODES)} or all (default: eager deploy channels_last '
                        'compile cuda_graph on GPU; eager deploy onnxruntime on CPU)')
    parser.add_argument('--out', default='work_dirs/benchmark/benchmark.json',
                        help='JSON file to write (the markdown table goes next to it, .md), or a '
                        'folder to write benchmark.json into')
    parser.add_argument('--md', default=None, help='markdown file (default: --out with .md)')
    parser.add_argument('--warmup', type=int, default=None, help='override warm-up runs')
    parser.add_argument('--iters', type=int, default=None, help='override timed runs')
    parser.add_argument('--rounds', type=int, default=1,
                        help='time the modes of each arch in this many interleaved rounds of '
                        '--iters runs, pooled (fairer ratios on a shared, drifting machine)')
    parser.add_argument('--batch', type=int, default=None,
                        help='override the batch size')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default 1, the protocol)')
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument('--amp', dest='amp', action='store_true', default=None,
                     help='fp16 autocast on every GPU protocol')
    amp.add_argument('--no-amp', dest='amp', action='store_false',
                     help='fp32 on every GPU protocol')
    parser.add_argument('--compile-mode', default=None,
                        help='torch.compile mode (default, reduce-overhead, max-autotune...)')
    parser.add_argument('--no-timm', action='store_true', help='do not time timm models')
    parser.add_argument('--no-reference', action='store_true', help='no ResNet-50 rows')
    parser.add_argument('--no-check', action='store_true',
                        help='do not compare each mode\'s outputs with eager')
    parser.add_argument('--calib-dir', default=None,
                        help='onnxruntime_int8: calibrate on the images of this folder '
                        '(default: generated demo images)')
    parser.add_argument('--calib-images', type=int, default=None,
                        help='onnxruntime_int8: number of calibration images (default 16)')
    parser.add_argument('--calib-method', default='minmax',
                        choices=['minmax', 'percentile', 'entropy'],
                        help='onnxruntime_int8: calibration method (default minmax)')
    parser.add_argument('--no-peaks', action='store_true',
                        help='do not measure the GEMM peaks (rows then have no peak_fraction)')
    parser.add_argument('--malloc', choices=['system', 'retain'], default='system',
                        help='retain: make glibc keep freed memory for reuse instead of '
                        'returning it to the OS (mmext.deploy.malloc; large activations then '
                        'fault in no new pages); recorded in the results (default system)')
    parser.add_argument('--tiny', action='store_true',
                        help='batch 2, 64x64, 1 warm-up, 3 runs (a smoke test)')
    args = parser.parse_args(argv)
    from mmext.benchmark.backbone import check_counts
    from mmext.benchmark.report import output_paths, threads_warning
    check_counts(warmup=args.warmup, iters=args.iters, threads=args.threads, batch=args.batch,
                 rounds=args.rounds, calib_images=args.calib_images)
    # where the results go, checked before the benchmark runs (a folder gets benchmark.json)
    json_path, md_path = output_paths(args.out, args.md, 'benchmark.json')
    warning = threads_warning(args.threads)
    if warning:
        print(f'warning: {warning}', file=sys.stderr, flush=True)
    if args.calib_dir is not None:
        from mmext.deploy.quantize import image_files
        image_files(args.calib_dir)  # a missing or empty folder is an error before any timing

    if args.malloc == 'retain':
        from mmext.deploy.malloc import retain_freed_memory
        applied, why = retain_freed_memory()
        if not applied:
            raise ConfigError(f'--malloc retain cannot be applied here: {why}')
    from mmext.benchmark import environment, run_benchmark, to_markdown, write_results
    compile_kwargs = {'mode': args.compile_mode} if args.compile_mode else None
    meta = environment()
    from mmext.deploy.runners import module_version
    meta.update(tiny=args.tiny, rounds=args.rounds, openvino=module_version('openvino'))
    calib = dict(folder=args.calib_dir, num=args.calib_images, method=args.calib_method)
    rows = run_benchmark(archs=args.archs, protocols=args.protocols, modes=args.modes,
                         tiny=args.tiny, warmup=args.warmup, iters=args.iters,
                         threads=args.threads, amp=args.amp, batch=args.batch,
                         compare_timm=not args.no_timm, reference=not args.no_reference,
                         check=not args.no_check, compile_kwargs=compile_kwargs,
                         rounds=args.rounds, calib=calib, peaks=not args.no_peaks,
                         peak_n=512 if args.tiny else 2048, meta=meta)
    json_path, md_path = write_results(rows, json_path, md_path, meta)
    print(to_markdown(rows, meta))
    print(f'wrote {json_path} and {md_path}')


if __name__ == '__main__':
    run_cli(main)
