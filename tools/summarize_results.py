"""Tabulate and plot accuracy (work_dirs test results) against latency (benchmark JSON), with the
papers' and mmdet's reported numbers as reference rows.

Example:

    python tools/summarize_results.py --work-dirs work_dirs \
        --benchmark work_dirs/benchmark/benchmark.json work_dirs/benchmark/detectors.json \
        --out work_dirs/summary

--benchmark takes backbone benchmark JSON (tools/benchmark_backbone.py: backbone latency, joined
on the backbone) and detector benchmark JSON (tools/benchmark_detector.py: whole-detector
latency of RTMDet/YOLOX runs, joined on the config name), together or alone. The detector
latency is the network part (backbone+neck+head, no NMS; --detector-part predict for the
post-processed one) with the fused backbone (deploy; eager where a config has no deploy row).

Writes summary.md, summary.csv and summary.png into --out (a folder; an existing file is refused).
When no run with test (or validation) results is found under --work-dirs it stops with an error
(exit code 2) instead of writing a table of the papers' rows only; --allow-empty writes that table.
A benchmark JSON that is not one gives an error too.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dirs', nargs='*', default=['work_dirs'],
                        help='folders with mmengine runs (searched recursively)')
    parser.add_argument('--benchmark', nargs='*', default=None,
                        help='benchmark JSON file(s) from tools/benchmark_backbone.py and/or '
                        'tools/benchmark_detector.py')
    parser.add_argument('--out', default='work_dirs/summary', help='output folder')
    parser.add_argument('--latency-protocol', default=None,
                        help='benchmark protocol giving the latency (default: gpu_latency_seg, '
                        'else cpu_latency_seg, ...)')
    parser.add_argument('--latency-mode', default='deploy', help='benchmark mode (deploy)')
    parser.add_argument('--detector-part', default='network',
                        help='detector benchmark part giving the detector latency: network '
                        '(default, no post-processing) or predict (with NMS)')
    parser.add_argument('--detector-mode', default='deploy',
                        help='detector benchmark mode: deploy (default; eager where a config '
                        'has no deploy row) or eager')
    parser.add_argument('--all-runs', action='store_true',
                        help='every run of each work dir, not only the latest')
    parser.add_argument('--no-paper', action='store_true', help='leave out the paper rows')
    parser.add_argument('--no-plot', action='store_true')
    parser.add_argument('--allow-empty', action='store_true',
                        help="write the summary even when no run has results (papers' rows only)")
    args = parser.parse_args(argv)

    from mmext.apis import summarize
    result = summarize(work_dirs=args.work_dirs, benchmark=args.benchmark, out_dir=args.out,
                       latency_protocol=args.latency_protocol, latency_mode=args.latency_mode,
                       include_paper=not args.no_paper, latest_only=not args.all_runs,
                       make_plot=not args.no_plot, allow_empty=args.allow_empty,
                       detector_part=args.detector_part, detector_mode=args.detector_mode)
    with open(result['markdown']) as f:
        print(f.read())
    for warning in result['warnings']:
        print(f'warning: {warning}', file=sys.stderr)
    print('wrote ' + ', '.join(p for p in (result['markdown'], result['csv'], result['png']) if p))


if __name__ == '__main__':
    run_cli(main)
