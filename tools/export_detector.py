"""Export a single-stage detector (RTMDet, YOLOX, RetinaNet; any backbone) to one ONNX file with
box decoding and NMS inside the graph, checked against PyTorch in ONNX Runtime.

Examples:

    python tools/export_detector.py configs/rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py \
        work_dirs/shvit_s1_rtmdet/epoch_100.pth work_dirs/shvit_s1_rtmdet.onnx
    python tools/export_detector.py mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py none \
        rtmdet_tiny_random.onnx --shape 320 320

The file takes `input` (N, 3, H, W) float32: 0-255 BGR images resized (keep ratio) and padded by
the caller (mmext.deploy.detector_runtime.preprocess does both); it returns `dets` (N, K, 5) and
`labels` (N, K) in input pixels, K = test_cfg.max_per_img, unused rows label -1. Its `mmext`
metadata holds classes, normalisation, sizes and thresholds. CHECKPOINT `none` exports random
weights (for speed measurements only). --shape H W sets the size images are resized to (default:
the config's test Resize). --nms-pre N: the (prior, class) pairs per level kept before NMS
(default the config's test_cfg.nms_pre capped at 1000, which made RTMDet's OpenVINO graph ~20%
faster; -1 keeps the config's value, mmdet's own output exactly). The output must end in .onnx and must not exist (--force replaces
it); it is written to a temporary file and renamed only after the check passed.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmext.errors import ConfigError, run_cli  # noqa: E402


def main(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='an mmdet config (path, mmext::... or mmdet::...)')
    parser.add_argument('checkpoint', help='weights training wrote, or "none" (random)')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar='H W',
                        help='resize images to fit H x W (keep ratio); one number: square')
    parser.add_argument('--no-normalize', action='store_true',
                        help='leave BGR->RGB and mean/std to the caller (not in the graph)')
    parser.add_argument('--static', action='store_true',
                        help='fixed input shape (the traced one) instead of dynamic N, H, W')
    parser.add_argument('--nms-pre', type=int, default=None, metavar='N',
                        help='(prior, class) pairs per level kept before NMS (default: the '
                             "config's test_cfg.nms_pre, at most 1000; -1: the config's value)")
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--force', action='store_true', help='replace an existing .onnx file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values, as in tools/train.py')
    args = parser.parse_args(argv)
    shape = args.shape
    if shape is not None:
        if len(shape) == 1:
            shape = shape * 2
        if len(shape) != 2 or min(shape) <= 0:
            raise ConfigError(f'--shape is H W (or one number), positive, not {args.shape}')
    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint

    from mmext.apis import export_detector
    info = export_detector(args.config, checkpoint, args.out, input_size=shape,
                           normalize_in_graph=not args.no_normalize, dynamic=not args.static,
                           opset=args.opset, force=args.force, cfg_options=args.cfg_options,
                           nms_pre=args.nms_pre)
    meta = info['meta']
    shape = 'x'.join(str(v) for v in info['input_shape'])
    print(f'wrote {info["path"]}: {meta["detector"]} ({meta["backbone"]}), input {shape} '
          f'({"dynamic" if info["dynamic"] else "static"}), K={meta["max_per_img"]}, {len(meta["classes"])} classes; ONNX Runtime vs PyTorch: max '
          f'box diff {info["max_box_diff"]:.2e} px, score diff {info["max_score_diff"]:.2e}; '
          f'export {info["export_s"]:.1f} s' + ('' if checkpoint else '; random weights'))


if __name__ == '__main__':
    run_cli(main)
