"""Non-maximum suppression inside an exported detector: the ONNX ``NonMaxSuppression`` operator,
with an eager PyTorch equivalent (no torchvision, no mmcv op), and the fixed-size gather of the
kept detections into ``dets (N, K, 5)`` / ``labels (N, K)``.

:class:`NonMaxSuppression` is a ``torch.autograd.Function`` whose ``symbolic`` writes one ONNX
``NonMaxSuppression`` node (opset >= 10) and whose ``forward`` does what ONNX Runtime's CPU kernel
does, so a wrapper module runs the same in PyTorch and in the exported graph:

* boxes of score ``<= score_threshold`` are dropped first (strictly greater is kept);
* the rest are visited in descending score (equal scores: lower index first) and a box is
  suppressed by a selected one when their IoU is ``> iou_threshold``; IoU is 0 (never suppressed)
  when either box or the intersection has no area; corners are taken as min/max, so the
  coordinate order within a box does not matter;
* at most ``max_output_boxes_per_class`` boxes per (image, class) are selected;
* output: ``(S, 3)`` int64 ``[batch, class, box]`` rows, by image, then class, then selection.

:func:`batched_nms_fixed` does mmdet's ``batched_nms`` on candidate boxes with labels: per-class
NMS through the coordinate-offset trick (each class moved ``label * (max coordinate + 1)`` away,
``max`` over the valid candidates, as mmdet does), or class-agnostic, followed by the
``max_per_img`` best kept ones, padded to exactly ``K`` rows (score 0, label -1, box 0).
"""
import numpy as np
import torch


def _greedy(boxes, iou_threshold, max_out):
    """Positions kept by greedy NMS of ``boxes`` (``(M, 4)`` float32 numpy, sorted by descending
    score), computed as ONNX Runtime's CPU kernel does (float32, corners as min/max)."""
    x1 = np.minimum(boxes[:, 0], boxes[:, 2])
    x2 = np.maximum(boxes[:, 0], boxes[:, 2])
    y1 = np.minimum(boxes[:, 1], boxes[:, 3])
    y2 = np.maximum(boxes[:, 1], boxes[:, 3])
    area = (x2 - x1) * (y2 - y1)
    n = boxes.shape[0]
    alive = np.ones(n, dtype=bool)
    kept, pos = [], 0
    while len(kept) < max_out:
        ahead = np.flatnonzero(alive[pos:])
        if not len(ahead):
            break
        i = pos + int(ahead[0])
        kept.append(i)
        pos = i + 1
        if area[i] <= 0:
            continue  # suppresses nothing
        rest = slice(pos, n)
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = iw * ih
        union = area[i] + area[rest] - inter
        # IoU 0 (no suppression) without a positive intersection, area or union
        ok = (iw > 0) & (ih > 0) & (inter > 0) & (area[rest] > 0) & (union > 0)
        iou = inter / np.where(ok, union, np.float32(1))
        alive[rest] &= ~(ok & (iou > np.float32(iou_threshold)))
    return kept


def nms_eager(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
    """ONNX ``NonMaxSuppression`` in PyTorch: ``boxes (N, B, 4)``, ``scores (N, C, B)`` ->
    ``(S, 3)`` int64 ``[batch, class, box]`` (see the module docstring for the semantics)."""
    rows = []
    max_out = int(max_output_boxes_per_class)
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = torch.nonzero(s > score_threshold).flatten()
            if max_out <= 0 or cand.numel() == 0:
                continue
            order = cand[torch.sort(s[cand], descending=True, stable=True)[1]]
            sorted_boxes = boxes[b, order].detach().cpu().float().numpy()
            idx = order[torch.as_tensor(_greedy(sorted_boxes, iou_threshold, max_out),
                                        dtype=torch.int64, device=order.device)]
            rows.append(torch.stack([torch.full_like(idx, b), torch.full_like(idx, c), idx],
                                    dim=1))
    if not rows:
        return boxes.new_zeros((0, 3), dtype=torch.int64)
    return torch.cat(rows).to(torch.int64)


class NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``) with :func:`nms_eager` as forward.

    ``max_output_boxes_per_class``, ``iou_threshold`` and ``score_threshold`` are Python numbers
    and become constants of the graph.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
        if torch.onnx.is_in_onnx_export():
            # the exporter writes symbolic()'s node; the traced value only has to have the
            # output's type: the best box of each (image, class), without running NMS
            n, c = scores.shape[0], scores.shape[1]
            best = scores.argmax(dim=2).reshape(-1)
            grid = torch.arange(n * c, device=scores.device)
            return torch.stack([torch.div(grid, c, rounding_mode='floor'), grid % c, best],
                               dim=1).to(torch.int64)
        return nms_eager(boxes, scores, max_output_boxes_per_class, iou_threshold,
                         score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
        max_out = g.op('Constant', value_t=torch.tensor([int(max_output_boxes_per_class)],
                                                        dtype=torch.int64))
        iou = g.op('Constant', value_t=torch.tensor([float(iou_threshold)],
                                                    dtype=torch.float32))
        score = g.op('Constant', value_t=torch.tensor([float(score_threshold)],
                                                      dtype=torch.float32))
        return g.op('NonMaxSuppression', boxes, scores, max_out, iou, score,
                    center_point_box_i=0)


def non_max_suppression(boxes, scores, max_output_boxes_per_class, iou_threshold,
                        score_threshold=0.0):
    """:class:`NonMaxSuppression` applied (an ONNX node when exporting, eager otherwise)."""
    return NonMaxSuppression.apply(boxes, scores, int(max_output_boxes_per_class),
                                   float(iou_threshold), float(score_threshold))


def batched_nms_fixed(boxes, scores, labels, iou_threshold, max_per_img, class_agnostic=False):
    """mmdet's ``batched_nms`` + ``[:max_per_img]`` on a batch of candidates, padded to ``K``.

    Args:
        boxes (Tensor): ``(N, M, 4)`` x1, y1, x2, y2.
        scores (Tensor): ``(N, M)``; a candidate with score ``<= 0`` is not one (filtered out
            before: below ``score_thr``, too small, or padding).
        labels (Tensor): ``(N, M)`` int64 class indices.
        iou_threshold (float): boxes with IoU above it are suppressed.
        max_per_img (int): ``K``, the rows of the outputs.
        class_agnostic (bool): one NMS over all classes instead of one per class.

    Returns:
        tuple: ``dets (N, K, 5)`` float32 (x1, y1, x2, y2, score) sorted by score, descending,
        and ``labels (N, K)`` int64; rows past the kept detections have score 0 (and zero box)
        and label -1.
    """
    n, k = boxes.shape[0], int(max_per_img)
    valid = scores > 0
    if class_agnostic:
        nms_boxes = boxes
    else:
        # mmdet: offsets = labels * (max coordinate + 1), the max over the candidates NMS sees
        lowest = torch.full_like(boxes, float('-inf'))
        max_coord = torch.where(valid.unsqueeze(-1), boxes, lowest).amax(dim=(1, 2))
        max_coord = torch.where(torch.isfinite(max_coord), max_coord,
                                torch.zeros_like(max_coord))
        offsets = labels.to(boxes.dtype) * (max_coord.unsqueeze(1) + 1)
        nms_boxes = boxes + offsets.unsqueeze(-1)
    selected = non_max_suppression(nms_boxes, scores.unsqueeze(1), k, iou_threshold, 0.0)
    batch_idx, box_idx = selected[:, 0], selected[:, 2]
    keep = torch.zeros_like(scores)
    keep = keep.index_put((batch_idx, box_idx), torch.ones_like(batch_idx, dtype=scores.dtype))
    kept_scores = torch.where(keep > 0, scores, torch.zeros_like(scores))
    # K zero rows appended: top-k of K always exists, whatever the number of candidates
    pad = kept_scores.new_zeros((n, k))
    kept_scores = torch.cat([kept_scores, pad], dim=1)
    top_scores, top_idx = kept_scores.topk(k, dim=1)
    boxes = torch.cat([boxes, boxes.new_zeros((n, k, 4))], dim=1)
    labels = torch.cat([labels, labels.new_zeros((n, k))], dim=1)
    top_boxes = boxes.gather(1, top_idx.unsqueeze(-1).expand(n, k, 4))
    top_labels = labels.gather(1, top_idx)
    found = top_scores > 0
    top_boxes = torch.where(found.unsqueeze(-1), top_boxes, torch.zeros_like(top_boxes))
    top_labels = torch.where(found, top_labels, torch.full_like(top_labels, -1))
    dets = torch.cat([top_boxes, top_scores.unsqueeze(-1)], dim=-1)
    return dets, top_labels
