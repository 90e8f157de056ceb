"""Dense heads in an exported detector: priors from the feature shapes, box decoding, and the
candidates NMS gets, the same as mmdet 3.3's ``predict_by_feat`` in every step but the NMS.

Each adapter turns the head's raw outputs (``head(feats)``) into candidates of a batch:
``boxes (N, M, 4)`` in input-tensor pixels, ``scores (N, M)`` (0 for what mmdet drops before
NMS) and ``labels (N, M)``, for :func:`mmext.deploy.detector_nms.batched_nms_fixed`.

* :class:`DenseCandidates` -- heads that use mmdet's ``BaseDenseHead._predict_by_feat_single``
  (RTMDet's ``RTMDetHead``/``RTMDetSepBNHead`` with ``MlvlPointGenerator`` points and
  ``DistancePointBBoxCoder``; RetinaNet's ``RetinaHead``/``AnchorHead`` with ``AnchorGenerator``
  anchors and ``DeltaXYWHBBoxCoder``): per level, sigmoid (or softmax without background) scores
  of every (prior, class) pair, the ``nms_pre`` best pairs, decode, ``score > score_thr``, clip
  to the input, boxes wider and taller than ``min_bbox_size``.
* :class:`YOLOXCandidates` -- ``YOLOXHead``: all priors, class = the best class, score = its
  sigmoid times the sigmoid objectness, ``score >= score_thr``, no clipping.

Priors are computed in the graph from each feature map's height and width (traced as tensors,
so the exported graph takes any input size); their layout equals mmdet's ``grid_priors``.
"""
import math

import torch
import torch.nn as nn

from mmext.errors import ConfigError

#: head class names (mmdet 3.3) the export supports
SUPPORTED_HEADS = ('RTMDetHead', 'RTMDetSepBNHead', 'RetinaHead', 'AnchorHead', 'YOLOXHead')


def _class_names(obj):
    return [c.__name__ for c in type(obj).__mro__]


def _grid(feat, stride_w, stride_h, offset, dtype):
    """``(x (H*W,), y (H*W,))`` pixel coordinates of the feature map's cells, row-major."""
    h, w = feat.shape[-2:]
    device = feat.device
    xs = ((torch.arange(0, w, device=device) + offset) * stride_w).to(dtype)
    ys = ((torch.arange(0, h, device=device) + offset) * stride_h).to(dtype)
    xx = (xs.view(1, -1) + torch.zeros_like(ys).view(-1, 1)).reshape(-1)
    yy = (ys.view(-1, 1) + torch.zeros_like(xs).view(1, -1)).reshape(-1)
    return xx, yy


def point_priors(feat, stride, offset=0.0, with_stride=False):
    """mmdet's ``MlvlPointGenerator.single_level_grid_priors`` for ``feat``'s (dynamic) size."""
    stride_w, stride_h = stride
    xx, yy = _grid(feat, stride_w, stride_h, offset, feat.dtype)
    if not with_stride:
        return torch.stack([xx, yy], dim=-1)
    sw = torch.full_like(xx, float(stride_w))
    sh = torch.full_like(xx, float(stride_h))
    return torch.stack([xx, yy, sw, sh], dim=-1)


def anchor_priors(feat, stride, base_anchors):
    """mmdet's ``AnchorGenerator.single_level_grid_priors``: ``(H*W*A, 4)``, anchor fastest."""
    stride_w, stride_h = stride
    xx, yy = _grid(feat, stride_w, stride_h, 0, base_anchors.dtype)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base_anchors.unsqueeze(0) + shifts.unsqueeze(1)).reshape(-1, 4)


def clip_boxes(boxes, height, width):
    """Clamp x to ``[0, width]`` and y to ``[0, height]`` (traced sizes stay dynamic)."""
    zero = torch.zeros_like(boxes)
    limit = torch.stack([width, height, width, height]).to(boxes.dtype) \
        if isinstance(width, torch.Tensor) else \
        boxes.new_tensor([width, height, width, height])
    boxes = torch.where(boxes < zero, zero, boxes)
    return torch.where(boxes > limit, limit.expand_as(boxes), boxes)


def distance_decode(points, distance):
    """mmdet's ``distance2bbox`` (clipping apart): ``(..., 2)`` points, ``(..., 4)`` l, t, r, b."""
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    return torch.stack([x1, y1, x2, y2], -1)


def delta_decode(anchors, deltas, means, stds, wh_ratio_clip=16 / 1000, add_ctr_clamp=False,
                 ctr_clamp=32):
    """mmdet's ``delta2bbox`` (clipping apart) for ``(..., 4)`` anchors and deltas."""
    denorm = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    dxy, dwh = denorm[..., :2], denorm[..., 2:]
    pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
    pwh = anchors[..., 2:] - anchors[..., :2]
    dxy_wh = pwh * dxy
    max_ratio = float(abs(math.log(wh_ratio_clip)))
    if add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=ctr_clamp, min=-ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    return torch.cat([gxy - (gwh * 0.5), gxy + (gwh * 0.5)], dim=-1)


def _gather_rows(t, idx):
    """``t (N, P, D)`` rows ``idx (N, k)`` -> ``(N, k, D)``."""
    return t.gather(1, idx.unsqueeze(-1).expand(idx.shape[0], idx.shape[1], t.shape[-1]))


class DenseCandidates(nn.Module):
    """Candidates of a ``BaseDenseHead`` with point or anchor priors (see the module docstring)."""

    def __init__(self, head, test_cfg):
        super().__init__()
        names = _class_names(head)
        coder = type(head.bbox_coder).__name__
        if 'RTMDetHead' in names:
            if coder != 'DistancePointBBoxCoder':
                raise ConfigError(f'RTMDet head with {coder}: only DistancePointBBoxCoder '
                                  'is exported.')
            self.kind = 'points'
            self.offset = float(head.prior_generator.offset)
        elif 'AnchorHead' in names:
            if coder != 'DeltaXYWHBBoxCoder':
                raise ConfigError(f'{type(head).__name__} with {coder}: only '
                                  'DeltaXYWHBBoxCoder is exported for anchor heads.')
            self.kind = 'anchors'
            for i, base in enumerate(head.prior_generator.base_anchors):
                self.register_buffer(f'base_anchors{i}', base.clone().float(), persistent=False)
            c = head.bbox_coder
            self.delta_args = dict(means=[float(v) for v in c.means],
                                   stds=[float(v) for v in c.stds],
                                   add_ctr_clamp=bool(c.add_ctr_clamp),
                                   ctr_clamp=float(c.ctr_clamp))
        else:
            raise ConfigError(f'{type(head).__name__} is not an exported head type.')
        self.clip = bool(getattr(head.bbox_coder, 'clip_border', True))
        self.strides = [tuple(int(v) for v in s) for s in head.prior_generator.strides]
        self.num_classes = int(head.num_classes)
        self.cls_out_channels = int(head.cls_out_channels)
        self.sigmoid = bool(getattr(head, 'use_sigmoid_cls', True))
        self.nms_pre = int(test_cfg.get('nms_pre', -1))
        self.score_thr = float(test_cfg.get('score_thr', 0))
        self.min_bbox_size = float(test_cfg.get('min_bbox_size', -1))

    def forward(self, head_outs, height, width):
        cls_scores, bbox_preds = head_outs[0], head_outs[1]
        all_boxes, all_scores, all_labels = [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            n = cls_score.shape[0]
            c = self.cls_out_channels
            logits = cls_score.permute(0, 2, 3, 1).reshape(n, -1, c)
            preds = bbox_pred.permute(0, 2, 3, 1).reshape(n, -1, 4)
            if self.sigmoid:
                scores = logits.sigmoid()
            else:
                scores = logits.softmax(-1)[..., :-1]
            if self.kind == 'points':
                priors = point_priors(cls_score, self.strides[level], self.offset)
            else:
                priors = anchor_priors(cls_score, self.strides[level],
                                       getattr(self, f'base_anchors{level}'))
            k = self.num_classes
            flat = scores.reshape(n, -1)  # (prior, class) pairs, class fastest
            if self.nms_pre > 0:
                pairs = flat.shape[1]
                # nms_pre zero pairs appended: top-k of nms_pre always exists (a zero pair is no
                # candidate, its index is clamped onto a real one)
                flat = torch.cat([flat, flat.new_zeros((n, self.nms_pre))], dim=1)
                top_scores, idx = flat.topk(self.nms_pre, dim=1, sorted=False)
                idx = torch.where(idx < pairs, idx, torch.zeros_like(idx))
            else:
                top_scores = flat
                idx = torch.arange(0, flat.shape[1], device=flat.device).unsqueeze(0) \
                    .expand(n, flat.shape[1])
            prior_idx = torch.div(idx, k, rounding_mode='floor')
            labels = idx - prior_idx * k
            sel_preds = _gather_rows(preds, prior_idx)
            sel_priors = priors[prior_idx]
            if self.kind == 'points':
                boxes = distance_decode(sel_priors, sel_preds)
            else:
                boxes = delta_decode(sel_priors, sel_preds, **self.delta_args)
            all_boxes.append(boxes)
            all_scores.append(top_scores)
            all_labels.append(labels)
        boxes = torch.cat(all_boxes, dim=1)
        scores = torch.cat(all_scores, dim=1)
        labels = torch.cat(all_labels, dim=1)
        if self.clip:
            boxes = clip_boxes(boxes, height, width)
        valid = scores > self.score_thr
        if self.min_bbox_size >= 0:
            w = boxes[..., 2] - boxes[..., 0]
            h = boxes[..., 3] - boxes[..., 1]
            valid = valid & (w > self.min_bbox_size) & (h > self.min_bbox_size)
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        return boxes, scores, labels


class YOLOXCandidates(nn.Module):
    """Candidates of mmdet's ``YOLOXHead`` (see the module docstring)."""

    def __init__(self, head, test_cfg):
        super().__init__()
        self.strides = [tuple(int(v) for v in s) for s in head.prior_generator.strides]
        self.offset = float(head.prior_generator.offset)
        self.num_classes = int(head.num_classes)
        self.score_thr = float(test_cfg.get('score_thr', 0))

    def forward(self, head_outs, height, width):
        cls_scores, bbox_preds, objectnesses = head_outs
        n = cls_scores[0].shape[0]
        c = self.num_classes
        logits = torch.cat([s.permute(0, 2, 3, 1).reshape(n, -1, c) for s in cls_scores], 1)
        preds = torch.cat([p.permute(0, 2, 3, 1).reshape(n, -1, 4) for p in bbox_preds], 1)
        obj = torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1) for o in objectnesses], 1)
        priors = torch.cat([point_priors(s, self.strides[i], self.offset, with_stride=True)
                            for i, s in enumerate(cls_scores)], 0)
        cls = logits.sigmoid()
        obj = obj.sigmoid()
        xys = (preds[..., :2] * priors[:, 2:]) + priors[:, :2]
        whs = preds[..., 2:].exp() * priors[:, 2:]
        tl_x = (xys[..., 0] - whs[..., 0] / 2)
        tl_y = (xys[..., 1] - whs[..., 1] / 2)
        br_x = (xys[..., 0] + whs[..., 0] / 2)
        br_y = (xys[..., 1] + whs[..., 1] / 2)
        boxes = torch.stack([tl_x, tl_y, br_x, br_y], -1)
        max_scores, labels = cls.max(dim=-1)
        scores = max_scores * obj
        valid = obj * max_scores >= self.score_thr
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        return boxes, scores, labels


def head_candidates(head, test_cfg):
    """The candidates module for ``head`` (mmdet 3.3), or :class:`ConfigError` naming what
    is supported."""
    names = _class_names(head)
    if 'RTMDetInsHead' in names:
        raise ConfigError('RTMDet-Ins (instance masks) is not exported; the detector export '
                          f'supports box heads: {", ".join(SUPPORTED_HEADS)}.')
    if 'YOLOXHead' in names:
        return YOLOXCandidates(head, test_cfg)
    if 'RTMDetHead' in names or 'RetinaHead' in names or type(head).__name__ == 'AnchorHead':
        return DenseCandidates(head, test_cfg)
    raise ConfigError(f'the detector export supports the heads {", ".join(SUPPORTED_HEADS)}; '
                      f'this config has {type(head).__name__}.')
