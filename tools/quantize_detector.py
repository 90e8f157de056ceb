"""Quantize an exported detector (tools/export_detector.py) to int8: OUT.onnx for ONNX Runtime
(static QDQ), OUT.xml (+ .bin) for OpenVINO (NNCF; its transformer mode where the graph has
attention). Calibrated on --images (files, folders or glob patterns; the first --num), or on
generated demo images when none are given (for latency checks only: calibrate on images like
the ones you will run for accuracy). The heads' output convolutions, decoding and NMS stay float;
the file keeps the export's metadata, so tools/predict.py and DetectorSession run it as they run
the .onnx (`--backend openvino --precision int8` for an .xml).

Examples:

    python tools/quantize_detector.py det.onnx det.int8.xml --images data/coco/val2017 --num 64
    python tools/quantize_detector.py det.onnx det.int8.onnx --images 'frames/*.jpg'

The output must not exist (--force replaces it); it is written under a temporary name and renamed
when complete.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx', help='the fp32 .onnx tools/export_detector.py wrote')
    parser.add_argument('out', help='the int8 file: .onnx (ONNX Runtime) or .xml (OpenVINO)')
    parser.add_argument('--images', nargs='+', default=None, metavar='PATH',
                        help='calibration images: files, folders or glob patterns (default: '
                             'generated demo images, for latency only)')
    parser.add_argument('--num', type=int, default=None,
                        help="calibration images used (default: quantize_detector's, 16)")
    parser.add_argument('--model-type', default='auto', choices=('auto', 'cnn', 'transformer'),
                        help="OpenVINO: NNCF's mode (auto: transformer where the graph has "
                             'attention)')
    parser.add_argument('--force', action='store_true', help='replace an existing output')
    args = parser.parse_args(argv)

    from mmext.apis import quantize_detector
    num = {} if args.num is None else {'num': args.num}
    info = quantize_detector(args.onnx, args.out, images=args.images, model_type=args.model_type,
                             force=args.force, **num)
    print(f'wrote {" + ".join(info["files"])} ({info["size_mb"]:.2f} MB): {info["backend"]} '
          f'int8, calibrated on {info["calibration"]}; {info["note"]}')
    if args.images is None:
        print('note: calibrated on generated demo images: fine for latency; pass --images with '
              'images like yours for accuracy.')


if __name__ == '__main__':
    run_cli(main)
