"""Run a detector on images, folders, glob patterns and videos; write annotated images/videos
and mmdet DetInferencer-style JSON (``yolo predict`` for mmext).

    python tools/predict.py CONFIG SOURCE [SOURCE ...] --checkpoint CKPT [options]
    python tools/predict.py MODEL.onnx SOURCE [SOURCE ...] [--backend openvino] [options]

SOURCE: an image, a video (.mp4, .avi, ...), a folder (its images and videos, sorted) or a
quoted glob pattern ('data/*.jpg'). Outputs go to --out-dir (default outputs/predict):
vis/<name> (vis/<stem>.mp4 for a video) and preds/<stem>.json ({"labels", "scores", "bboxes"};
for a video one entry per frame). Existing outputs are not replaced unless --force.
Prints the mean preprocess / inference / postprocess time per image.
"""
import argparse
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import DictAction  # noqa: E402

from mmext.errors import run_cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='an mmdet config (with --checkpoint), an exported .onnx '
                        'detector (tools/export_detector.py) or its OpenVINO int8 .xml '
                        '(--backend openvino --precision int8)')
    parser.add_argument('source', nargs='+', help='images, videos, folders, glob patterns')
    parser.add_argument('--checkpoint', '--weights', dest='checkpoint',
                        help="the config's trained weights (a .pth path or URL)")
    parser.add_argument('--out-dir', default=osp.join('outputs', 'predict'),
                        help='output folder (default: outputs/predict)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw and write detections scoring above this (default 0.3)')
    parser.add_argument('--device', default=None, help='torch device (default: cuda:0 if '
                        'available, else cpu)')
    parser.add_argument('--fuse', action='store_true',
                        help="fold the backbone (switch_to_deploy) after loading")
    parser.add_argument('--bf16', action='store_true', help='backbone and neck in bf16 (native '
                        'bf16 CPUs/GPUs only); for an export: its bf16 precision')
    parser.add_argument('--backend', default='onnxruntime', choices=['onnxruntime', 'openvino'],
                        help='runtime of an exported model (default onnxruntime)')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'int8'],
                        help='precision of an exported model (default fp32)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads')
    parser.add_argument('--no-save-vis', action='store_true', help='write no annotated images')
    parser.add_argument('--no-save-pred', action='store_true', help='write no JSON files')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--force', action='store_true', help='replace existing output files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='config overrides (key=value)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmext.apis import predict
    predict(args.model, args.source, checkpoint=args.checkpoint, out_dir=args.out_dir,
            score_thr=args.score_thr, device=args.device, cfg_options=args.cfg_options,
            fuse=args.fuse, bf16=args.bf16, backend=args.backend, precision=args.precision,
            threads=args.threads, save_vis=not args.no_save_vis,
            save_pred=not args.no_save_pred, force=args.force, progress=not args.no_progress)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
