"""One detector in every deployment format, with anchors, in one table: status, file size, bbox
AP on a COCO-format validation set (and its change vs torch fp32), preprocess / inference /
postprocess ms per image and FPS, all formats timed in interleaved rounds in one run.

Formats: torch-fp32, torch-bf16 (native bf16 CPUs only), onnxruntime-fp32, onnxruntime-int8
(quantize_static QDQ, per-channel), openvino-fp32, openvino-bf16, openvino-int8 (NNCF); int8 is
calibrated on the first --calib-images evaluation images and keeps the heads' output convs, box
decoding and NMS in float. The exported file is tools/export_detector.py's (decoding and NMS in
the graph; inference ms covers them). CHECKPOINT `none` benchmarks random weights (seeded).
Anchors: mmdet's RTMDet-tiny exported and run the same way (--anchor-configs, random weights
unless --anchor-checkpoints), and --anchor-onnx files another exporter wrote (latency only).
See mmext/benchmark/formats.py.

Examples:

    python tools/benchmark_formats.py configs/rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py \
        none --out docs/benchmarks/detector_formats_cpu_1thread_640.json
    # a trained checkpoint on COCO val2017 (annotations/instances_val2017.json + val2017/)
    python tools/benchmark_formats.py CONFIG work_dirs/run/epoch_100.pth --data data/coco \
        --max-images 500 --out work_dirs/formats.json
    # only some formats, no RTMDet-tiny anchor
    python tools/benchmark_formats.py CONFIG none --formats torch-fp32 onnxruntime-fp32 \
        onnxruntime-int8 --anchor-configs --out work_dirs/formats.json

Ultralytics YOLO11n anchor (a separate venv: the index's torchvision wheels do not import beside
mmext's CPU torch; random weights built from the model yaml, exported by Ultralytics' own
exporter at 640, fp32, static 1x3x640x640; onnxslim is what its exporter simplifies with). By
default its graph ends before box decoding and NMS; nms=True puts them in, as mmext's exports
have them (that row is named <file>+nms):

    python3.11 -m venv .venv-ultralytics
    .venv-ultralytics/bin/pip install torch==2.1.2 torchvision==0.16.2 ultralytics onnx \
        onnxruntime openvino onnxslim
    .venv-ultralytics/bin/python -c "from ultralytics import YOLO; \
        YOLO('yolo11n.yaml').export(format='onnx', imgsz=640); \
        YOLO('yolo11n.yaml').export(format='openvino', imgsz=640)"
    mkdir nms && cd nms && ../.venv-ultralytics/bin/python -c "from ultralytics import YOLO; \
        YOLO('yolo11n.yaml').export(format='openvino', imgsz=640, nms=True, conf=0.05, \
        iou=0.6, max_det=300)" && cd ..
    python tools/benchmark_formats.py CONFIG none --anchor-onnx yolo11n.onnx \
        yolo11n_openvino_model nms/yolo11n_openvino_model --out ...

(tested with ultralytics 8.4.190, torch 2.1.2, openvino 2026.4.1, onnxslim 0.1.98).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import ConfigError, run_cli  # noqa: E402


def main(argv=None):
    from mmengine.config import DictAction

    from mmext.benchmark.formats import FORMATS, RTMDET_TINY
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='an mmdet config (path, mmext::... or mmdet::...)')
    parser.add_argument('checkpoint', help='weights training wrote, or "none" (random weights)')
    parser.add_argument('--out', default='work_dirs/benchmark/detector_formats.json',
                        help='JSON to write (the markdown table goes beside it, .md), or a '
                        'folder to write detector_formats.json into')
    parser.add_argument('--data', default=None,
                        help='COCO-format folder (annotations/instances_val2017.json + '
                        'val2017/); default: the generated demo validation set')
    parser.add_argument('--max-images', type=int, default=None,
                        help='evaluate on the first N images only')
    parser.add_argument('--shape', type=int, nargs='+', default=[640, 640], metavar='N',
                        help='H W the export resizes to and the timing input size '
                        '(default 640 640)')
    parser.add_argument('--batch', type=int, default=1, help='timing batch (default 1)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='interleaved rounds over all formats (default 3)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed runs per format before its first round (default 2; '
                        '1 before later rounds)')
    parser.add_argument('--iters', type=int, default=5,
                        help='timed runs per format per round (default 5)')
    parser.add_argument('--formats', nargs='+', default=['all'], metavar='FORMAT',
                        help=f'some of {", ".join(FORMATS)} (default all)')
    parser.add_argument('--calib-images', type=int, default=16,
                        help='int8 calibration images (the first of the data; default 16)')
    parser.add_argument('--anchor-configs', nargs='*', default=[RTMDET_TINY], metavar='CONFIG',
                        help=f'configs run like CONFIG (default {RTMDET_TINY}; none: give the '
                        'flag alone)')
    parser.add_argument('--anchor-checkpoints', nargs='*', default=[], metavar='CKPT',
                        help='checkpoints of the anchor configs, in order (none: random)')
    parser.add_argument('--anchor-onnx', nargs='*', default=[], metavar='PATH',
                        help='an ONNX file or OpenVINO model (.xml or folder) another exporter '
                        'wrote (Ultralytics YOLO11n), timed for latency only')
    parser.add_argument('--work-dir', default=None,
                        help='keep the exported and quantized files here (default: a '
                        'temporary folder, removed)')
    parser.add_argument('--nms-pre', type=int, default=None, metavar='N',
                        help="pairs per level the exports keep before NMS (default: the "
                        "config's, at most 1000; -1: the config's)")
    parser.add_argument('--check-ap', action='store_true',
                        help='exit with an error if a format\'s bbox AP differs from torch fp32 '
                        'by more than 0.002 (fp32), 0.01 (bf16) or 0.02 (int8); for trained '
                        'checkpoints (make accuracy)')
    parser.add_argument('--no-profile', action='store_true',
                        help='skip the backbone / neck / head / decode+NMS split of each format')
    parser.add_argument('--no-bounds', action='store_true',
                        help='skip the GMACs count and the GEMM peaks (the floor ms and the '
                        '"of peak" fraction of each format)')
    parser.add_argument('--seed', type=int, default=0, help='random weights seed (default 0)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values of CONFIG, as in tools/train.py')
    args = parser.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        raise ConfigError(f'--shape is H W (or one number), not {args.shape}')
    from mmext.apis.benchmark_formats import benchmark_formats
    from mmext.benchmark.formats import to_markdown
    from mmext.benchmark.report import threads_warning
    warning = threads_warning(args.threads)
    if warning:
        print(f'warning: {warning}', file=sys.stderr, flush=True)
    none = ('none', 'random')
    anchor_ckpts = [None if c.lower() in none else c for c in args.anchor_checkpoints]
    command = ' '.join(['python', 'tools/benchmark_formats.py'] + list(
        sys.argv[1:] if argv is None else argv))
    result = benchmark_formats(
        args.config, None if args.checkpoint.lower() in none else args.checkpoint,
        out=args.out, data=args.data, shape=tuple(args.shape), batch=args.batch,
        threads=args.threads, rounds=args.rounds, warmup=args.warmup, iters=args.iters,
        formats=args.formats, anchor_configs=args.anchor_configs,
        anchor_checkpoints=anchor_ckpts, anchor_onnx=args.anchor_onnx,
        max_images=args.max_images, calib_images=args.calib_images, work_dir=args.work_dir,
        seed=args.seed, cfg_options=args.cfg_options, command=command, nms_pre=args.nms_pre,
        profile=not args.no_profile, bounds=not args.no_bounds,
        progress=lambda msg: print(msg, flush=True))
    print(to_markdown(result['rows'], result['meta']))
    print(f'wrote {result["json"]} and {result["markdown"]}')
    if args.check_ap:
        from mmext.benchmark.formats import ap_violations
        from mmext.errors import MmextError
        bad = ap_violations(result['rows'])
        if bad:
            raise MmextError(f'{len(bad)} format(s) outside the AP bounds: ' + '; '.join(bad))
        print('AP check passed: every format within 0.002 (fp32), 0.01 (bf16), 0.02 (int8) '
              'of torch fp32')


if __name__ == '__main__':
    run_cli(main)
