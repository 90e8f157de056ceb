"""Whole-detector ONNX export (mmext.apis.export_detector, tools/export_detector.py) and its
runtime (mmext.deploy.detector_runtime).

Four tiny detectors (160 x 160 inputs, random weights with spread-out scores and boxes, saved as
a training checkpoint and exported from it): RTMDet + SHViT-S1, YOLOX-tiny + SHViT-S1, RetinaNet
+ SHViT-S1 (64-channel neck/head) and mmdet's own RTMDet-tiny. Checked: the file's inputs,
outputs and metadata; ONNX Runtime's detections equal the PyTorch wrapper's (batch 2, another
size); the wrapper's detections equal mmdet's own ``model.predict`` on the same input (the
accuracy check: boxes after the same rescale, scores, labels, the top-K set); the runtime's
resize/pad equals mmdet's test pipeline, and end to end the runtime equals mmdet's
``inference_detector``; class-agnostic NMS follows the config; refusals are one line.
"""
import copy
import json
import os
import os.path as osp
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.helpers import cli_error, load_tool

SIZE = 160
SHVIT_RTMDET = 'configs/rtmdet/shvit_s1_rtmdet_tiny_4xb32-100e_coco.py'
SHVIT_YOLOX = 'configs/yolox/shvit_s1_yolox_tiny_8xb8-100e_coco.py'
SHVIT_RETINA = 'configs/retinanet/shvit_s1_fpn_1x_coco.py'
MMDET_RTMDET = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
MODELS = {'rtmdet_shvit': SHVIT_RTMDET, 'yolox_shvit': SHVIT_YOLOX,
          'retinanet_shvit': SHVIT_RETINA, 'rtmdet_mmdet': MMDET_RTMDET}
CONTRACT_KEYS = ('classes', 'mean', 'std', 'bgr_to_rgb', 'pad_size_divisor', 'pad_value',
                 'normalize_in_graph', 'input_size', 'score_thr', 'iou_threshold', 'max_per_img',
                 'nms_pre', 'class_agnostic', 'config', 'mmext_version', 'torch_version',
                 'detector', 'backbone')

pytest.importorskip('mmdet')
ort = pytest.importorskip('onnxruntime')


# ------------------------------------------------------------------------------ helpers
def tiny_config(name, **test_cfg):
    """The config at SIZE x SIZE (test Resize/Pad), RetinaNet 64 channels wide."""
    from mmext.apis.export_detector import _resolve_config
    from mmext.engine.config import load_config
    cfg = load_config(_resolve_config(MODELS.get(name, name)))
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (SIZE, SIZE)
        if step['type'] == 'Pad' and step.get('size') is not None:
            step['size'] = (SIZE, SIZE)
    cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
    if name.startswith('retinanet'):
        cfg.model.neck.out_channels = 64
        cfg.model.bbox_head.in_channels = 64
        cfg.model.bbox_head.feat_channels = 64
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg.update(test_cfg)
    return cfg


#: final head convs -> (spread of their outputs over positions, bias range)
SPREAD = {'rtm_cls': (1.0, (-5.0, -2.0)), 'retina_cls': (1.0, (-5.0, -2.0)),
          'multi_level_conv_cls': (1.0, (-3.0, 0.0)), 'multi_level_conv_obj': (1.0, (-1.0, 1.0)),
          'rtm_reg': (0.5, (1.0, 3.0)), 'multi_level_conv_reg': (0.3, (-0.3, 0.3)),
          'retina_reg': (0.2, (-0.1, 0.1))}


def spread_head(detector, seed=0):
    """Random final head convs whose outputs vary over positions (scores from ~0 to ~0.9, boxes
    of one to a few strides) instead of the init's near-constant ones: random weights scaled so
    that the outputs' spread on a sample image is SPREAD's, random biases in SPREAD's range."""
    head = detector.bbox_head
    convs = {name: m for name, m in head.named_modules()
             if isinstance(m, nn.Conv2d) and name.split('.')[0] in SPREAD}
    gen = torch.Generator().manual_seed(seed)
    spread = {}
    hooks = [m.register_forward_hook(
        lambda m, i, o, name=name: spread.__setitem__(  # the widest level of shared convs
            name, max(spread.get(name, 0.0), float(o.std()))))
        for name, m in convs.items()]
    with torch.no_grad():
        for m in convs.values():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
            m.bias.zero_()
        x = torch.from_numpy(sample_image(SIZE, SIZE).transpose(2, 0, 1)[None].astype(
            np.float32))
        head(detector.extract_feat((x - 128.0) / 64.0))
        for hook in hooks:
            hook.remove()
        for name, m in convs.items():
            target, bias = SPREAD[name.split('.')[0]]
            m.weight.mul_(target / max(spread[name], 1e-12))
            m.bias.copy_(torch.empty(m.bias.shape).uniform_(*bias, generator=gen))


def build_tiny(name, **test_cfg):
    """``(cfg, detector)``: random weights (seed 0), spread head, eval mode."""
    from mmext.engine.config import build_config_model
    cfg = tiny_config(name, **test_cfg)
    torch.manual_seed(0)
    detector, _, cfg = build_config_model(cfg)
    spread_head(detector)
    return cfg, detector.eval()


def sample_image(h, w, seed=0):
    from mmext.deploy.detector_export import verification_image
    return verification_image(h, w, seed=seed)


def mmdet_predict(detector, x, infos):
    """mmdet's own data preprocessor + ``predict(rescale=True)`` on the padded input batch."""
    from mmdet.structures import DetDataSample
    samples = []
    for info in infos:
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=info['img_shape'], ori_shape=info['ori_shape'],
                                 scale_factor=info['scale_factor'],
                                 pad_shape=info['pad_shape']))
        samples.append(sample)
    data = dict(inputs=[torch.from_numpy(im.copy()) for im in x], data_samples=samples)
    with torch.no_grad():
        data = detector.data_preprocessor(data, False)
        results = detector.predict(data['inputs'], data['data_samples'], rescale=True)
    return [r.pred_instances for r in results]


def as_rows(result, k):
    """A postprocess-style dict (or mmdet's pred_instances) as ``(1, K, 5)`` and ``(1, K)``
    padded like the exported outputs (mmdet's YOLOX keeps more than K: its best K)."""
    boxes = np.asarray(result['bboxes'] if isinstance(result, dict) else result.bboxes,
                       np.float64)
    scores = np.asarray(result['scores'] if isinstance(result, dict) else result.scores,
                        np.float64)
    labels = np.asarray(result['labels'] if isinstance(result, dict) else result.labels)
    order = np.argsort(-scores, kind='stable')[:k]
    dets = np.zeros((1, k, 5))
    lab = np.full((1, k), -1, np.int64)
    dets[0, :len(order), :4] = boxes[order]
    dets[0, :len(order), 4] = scores[order]
    lab[0, :len(order)] = labels[order]
    return dets, lab


def clip_to(result, info):
    h, w = info['ori_shape']
    boxes = result.bboxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return dict(bboxes=boxes.numpy(), scores=result.scores.numpy(),
                labels=result.labels.numpy())


def assert_same_detections(ref, out, k, what, rtol=1e-3):
    from mmext.deploy.detector_export import compare_detections
    ref_dets, ref_labels = as_rows(ref, k)
    dets, labels = as_rows(out, k)
    result = compare_detections(ref_dets, ref_labels, dets, labels, rtol=rtol)
    assert result['ok'], f'{what}: {result["problem"]}'
    n_ref, n_out = int((ref_labels >= 0).sum()), int((labels >= 0).sum())
    assert n_ref == n_out, f'{what}: {n_out} detections where the reference has {n_ref}'
    assert n_ref > 5, f'{what}: too few detections ({n_ref}) for a meaningful comparison'
    return result


# ------------------------------------------------------------------------------ exports
def _export(name, folder):
    """One tiny detector, saved as a training checkpoint and exported from it."""
    from mmext.apis import export_detector
    from mmext.deploy.detector_export import DetectorWrapper, detector_settings, fuse_for_deploy
    cfg, detector = build_tiny(name)
    ckpt = str(folder / 'epoch_1.pth')
    torch.save(dict(meta=dict(epoch=1, iter=2, dataset_meta=dict(
        classes=[f'thing{i}' for i in range(detector.bbox_head.num_classes)])),
        state_dict=detector.state_dict()), ckpt)
    out = str(folder / f'{name}.onnx')
    info = export_detector(cfg, ckpt, out)
    settings = detector_settings(cfg, detector)
    wrapper = DetectorWrapper(fuse_for_deploy(copy.deepcopy(detector)), settings).eval()
    return dict(name=name, cfg=cfg, detector=detector, ckpt=ckpt, out=out, info=info,
                folder=str(folder), wrapper=wrapper, settings=settings)


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """``exports(name)``: the exported tiny detector ``name`` (made once per module)."""
    done = {}

    def get(name):
        if name not in done:
            done[name] = _export(name, tmp_path_factory.mktemp(name))
        return done[name]

    return get


@pytest.fixture(params=list(MODELS))
def exported(request, exports):
    return exports(request.param)


def test_file_has_the_contract_inputs_outputs_and_metadata(exported):
    import onnx
    from mmext.checkpoints.files import normal_mode
    from mmext.deploy.detector_runtime import read_metadata
    out, cfg = exported['out'], exported['cfg']
    model = onnx.load(out)
    assert model.opset_import[0].version == 17
    (inp, ), outs = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == 'input' and dims == ['batch', 3, 'height', 'width']
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.name for o in outs] == ['dets', 'labels']
    assert outs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outs[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert sum(n.op_type == 'NonMaxSuppression' for n in model.graph.node) == 1
    meta = read_metadata(out)
    assert set(CONTRACT_KEYS) <= set(meta)
    test_cfg = cfg.model.test_cfg
    assert meta['classes'] == [f'thing{i}' for i in range(80)]  # the checkpoint's
    assert meta['input_size'] == [SIZE, SIZE] and meta['normalize_in_graph'] is True
    assert meta['score_thr'] == pytest.approx(test_cfg.score_thr)
    assert meta['iou_threshold'] == pytest.approx(test_cfg.nms.iou_threshold)
    assert meta['max_per_img'] == test_cfg.get('max_per_img', 100)
    # the graph keeps the config's nms_pre capped at 1000 pairs per level (YOLOX: none)
    config_nms_pre = test_cfg.get('nms_pre', -1)
    assert meta['config_nms_pre'] == config_nms_pre
    assert meta['nms_pre'] == (min(config_nms_pre, 1000) if config_nms_pre > 0 else -1)
    assert meta['class_agnostic'] is False
    dp = cfg.model.data_preprocessor
    assert meta['mean'] == pytest.approx(list(dp.mean)) and meta['std'] == pytest.approx(
        list(dp.std))
    assert meta['bgr_to_rgb'] is bool(dp.get('bgr_to_rgb', False))
    assert meta['pad_size_divisor'] == 32 and len(meta['pad_value']) == 3
    names = {'rtmdet_shvit': ('RTMDet', 'SHViT-s1'), 'yolox_shvit': ('YOLOX', 'SHViT-s1'),
             'retinanet_shvit': ('RetinaNet', 'SHViT-s1'), 'rtmdet_mmdet': ('RTMDet', 'CSPNeXt-P5')}
    assert (meta['detector'], meta['backbone']) == names[exported['name']]
    assert meta['torch_version'] == torch.__version__
    # a complete file with a new file's permissions, nothing else left in the folder
    assert stat.S_IMODE(os.stat(out).st_mode) == normal_mode()
    assert sorted(os.listdir(exported['folder'])) == sorted(
        [osp.basename(out), osp.basename(exported['ckpt'])])
    info = exported['info']
    assert info['max_rel_diff'] < 1e-3 and all(c['ok'] for c in info['checks'].values())


def assert_padding_rows(dets, labels, score_thr):
    """The contract's rows: sorted by score, kept rows first (score > score_thr, label >= 0),
    then score 0, label -1 and a zero box."""
    for d, l in zip(dets, labels):
        kept = l >= 0
        n = int(kept.sum())
        assert kept[:n].all() and not kept[n:].any()
        assert (np.diff(d[:, 4]) <= 0).all()
        assert (d[n:] == 0).all() and (l[n:] == -1).all() and (d[:n, 4] > score_thr).all()


def test_onnxruntime_equals_the_torch_wrapper_batch_2_other_size(exported):
    """Dynamic N, H, W: two different images at 96 x 192 (neither the traced height nor
    width)."""
    from mmext.deploy.detector_export import compare_detections
    from mmext.deploy.detector_runtime import DetectorSession, preprocess
    session = DetectorSession(exported['out'])
    meta = dict(session.meta, input_size=[96, 192])
    x = np.concatenate([preprocess(sample_image(96, 192, seed=s), meta)[0] for s in (3, 4)])
    assert x.shape == (2, 3, 96, 192)
    dets, labels = session.run(x)
    k = meta['max_per_img']
    assert dets.shape == (2, k, 5) and labels.shape == (2, k) and labels.dtype == np.int64
    with torch.no_grad():
        ref = exported['wrapper'](torch.from_numpy(x))
    result = compare_detections(ref[0].numpy(), ref[1].numpy(), dets, labels)
    assert result['ok'], result['problem']
    assert min(result['detections']) > 5
    assert result['max_rel_diff'] < 1e-4
    assert_padding_rows(dets, labels, meta['score_thr'])


def test_torch_wrapper_equals_mmdet_predict(exported):
    """The key accuracy check: same input batch, mmdet's own predict (rescale=True) vs the
    wrapper's detections through the runtime's postprocess: boxes within 1e-3, scores, labels
    and the top-K set. Images whose resized size is the padded size (mmdet clips to the
    unpadded size, the graph to its input)."""
    from mmext.deploy.detector_runtime import postprocess, preprocess
    meta = json.loads(json.dumps(exported['info']['meta']))
    images = [sample_image(SIZE, SIZE, seed=5), sample_image(2 * SIZE, 2 * SIZE, seed=6)]
    if exported['name'] == 'retinanet_shvit':  # no square padding: another aspect ratio too
        images.append(sample_image(SIZE * 4 // 5, SIZE, seed=7))
    k = meta['max_per_img']
    for image in images:
        x, info = preprocess(image, meta)
        assert x.shape[2:] == info['img_shape']
        with torch.no_grad():
            dets, labels = exported['wrapper'](torch.from_numpy(x))
        ours = postprocess(dets[0].numpy(), labels[0].numpy(), info)
        theirs = clip_to(mmdet_predict(exported['detector'], x, [info])[0], info)
        assert_same_detections(theirs, ours, k, f'{exported["name"]} {image.shape}')
        # and the graph's own rows, in input pixels, against mmdet's without rescale or clip
        raw = dict(info, scale_factor=(1.0, 1.0), ori_shape=info['img_shape'])
        theirs = mmdet_predict(exported['detector'], x, [raw])[0]
        ours = dict(bboxes=dets[0, :, :4].numpy(), scores=dets[0, :, 4].numpy(),
                    labels=labels[0].numpy())
        keep = ours['labels'] >= 0
        assert_same_detections(theirs, {n: v[keep] for n, v in ours.items()}, k,
                               f'{exported["name"]} {image.shape} in input pixels')


def test_preprocess_equals_mmdet_test_pipeline(exported):
    """Resize (keep ratio, bilinear) and scale factors as mmdet's test pipeline; the padding
    as mmdet's Pad / data preprocessor puts it (pixel values before normalisation)."""
    from mmengine.dataset import Compose
    from mmdet.utils import register_all_modules
    from mmext.deploy.detector_runtime import preprocess
    register_all_modules(init_default_scope=False)
    meta = exported['info']['meta']
    steps = [dict(s, type='mmdet.Resize') for s in exported['cfg'].test_dataloader.dataset.pipeline
             if s['type'] == 'Resize']
    pipe = Compose([dict(type='mmdet.LoadImageFromNDArray')] + steps)
    for shape, padded in (((90, 137), (128, 160)), ((96, 160), (96, 160))):
        image = sample_image(*shape, seed=8)
        data = pipe(dict(img=image, img_id=0))
        x, info = preprocess(image, meta)
        h, w = data['img_shape']
        assert info['img_shape'] == (h, w) and info['ori_shape'] == shape
        assert info['scale_factor'] == pytest.approx(data['scale_factor'])
        np.testing.assert_array_equal(x[0, :, :h, :w], data['img'].transpose(2, 0, 1))
        assert x.shape[2:] == padded == info['pad_shape']
    x, info = preprocess(sample_image(90, 137), meta)
    pad = x[0, :, info['img_shape'][0]:, :].reshape(3, -1)
    assert pad.size and np.allclose(pad.T, meta['pad_value'])


@pytest.mark.parametrize('name', ['rtmdet_shvit', 'retinanet_shvit'])
def test_runtime_end_to_end_equals_mmdet_inference(exports, name):
    """DetectorSession.predict on an image vs mmdet.apis.inference_detector (the config's own
    test pipeline and data preprocessor) on the same image (an anchor-free and an anchor-based
    head)."""
    exported = exports(name)
    from mmdet.apis import inference_detector
    from mmext.deploy.detector_runtime import DetectorSession
    detector = copy.deepcopy(exported['detector'])
    detector.cfg = exported['cfg']
    image = sample_image(240, 240, seed=9)  # resized to 160 x 160: nothing padded
    from mmengine.registry import DefaultScope
    with torch.no_grad(), DefaultScope.overwrite_default_scope('mmdet'):
        theirs = inference_detector(detector, image).pred_instances
    ours = DetectorSession(exported['out']).predict([image])[0]
    assert set(ours) == {'bboxes', 'scores', 'labels'}
    assert ours['bboxes'].dtype == np.float32 and ours['labels'].dtype == np.int64
    info = dict(ori_shape=(240, 240))
    assert_same_detections(clip_to(theirs, info), ours, exported['info']['meta']['max_per_img'],
                           exported['name'])


# ------------------------------------------------------------------------------ NMS and priors
def test_nms_op_equals_onnxruntime_and_mmcv(tmp_path):
    """The eager NonMaxSuppression forward is ONNX Runtime's kernel (scores at the threshold,
    IoU at the threshold, zero-area and reversed boxes, several images and classes) and mmcv's
    nms on ordinary boxes."""
    from mmext.compat.onnx_export import onnx_export
    from mmext.deploy.detector_nms import nms_eager, non_max_suppression

    class NMS(nn.Module):
        def forward(self, boxes, scores):
            return non_max_suppression(boxes, scores, 7, 0.5, 0.2)

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 60, 2, generator=gen) * 50
    wh = torch.rand(2, 60, 2, generator=gen) * 30
    boxes = torch.cat([xy, xy + wh], -1)
    boxes[0, 3] = boxes[0, 3, [2, 3, 0, 1]]  # corners reversed
    boxes[0, 4, 2] = boxes[0, 4, 0]  # zero width
    boxes[1, 1] = torch.tensor([0., 0., 10., 10.])
    boxes[1, 2] = torch.tensor([0., 0., 10., 30.])  # IoU 1/3 with box 1
    boxes[1, 5] = torch.tensor([0., 0., 10., 20.])  # IoU exactly 0.5 with box 1: kept
    scores = torch.rand(2, 3, 60, generator=gen)
    scores[:, :, 7] = 0.2  # at the score threshold: dropped
    scores[1, :, 1], scores[1, :, 5] = 0.99, 0.98
    path = str(tmp_path / 'nms.onnx')
    onnx_export(NMS(), (boxes, scores), path, exporter='torchscript', input_names=['b', 's'],
                output_names=['sel'], opset_version=17,
                dynamic_axes={'b': {0: 'n', 1: 'm'}, 's': {0: 'n', 2: 'm'}})
    ours = nms_eager(boxes, scores, 7, 0.5, 0.2).numpy()
    theirs = ort.InferenceSession(path).run(None, {'b': boxes.numpy(), 's': scores.numpy()})[0]
    np.testing.assert_array_equal(ours, theirs)
    assert len(ours) == 2 * 3 * 7
    assert not np.isin(7, ours[:, 2]) and ((ours[:, 0] == 1) & (ours[:, 2] == 5)).sum() == 3
    from mmcv.ops import nms as mmcv_nms
    plain = boxes[1].clone()
    _, keep = mmcv_nms(plain, scores[1, 0], 0.5)
    ours = nms_eager(plain[None], scores[1, :1][None], 1000, 0.5, -1.0)[:, 2]
    np.testing.assert_array_equal(ours.numpy(), keep.numpy())


def test_priors_equal_mmdet_grid_priors():
    from mmdet.models.task_modules import AnchorGenerator, MlvlPointGenerator
    from mmext.deploy.detector_heads import anchor_priors, point_priors
    feat = torch.zeros(1, 4, 5, 7)
    points = MlvlPointGenerator([8, 16], offset=0.5)
    for level in range(2):
        for with_stride in (False, True):
            ref = points.single_level_grid_priors((5, 7), level, device='cpu',
                                                  with_stride=with_stride)
            out = point_priors(feat, points.strides[level], 0.5, with_stride)
            torch.testing.assert_close(out, ref)
    anchors = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                              scales_per_octave=3)
    for level in range(2):
        ref = anchors.single_level_grid_priors((5, 7), level, device='cpu')
        out = anchor_priors(feat, anchors.strides[level], anchors.base_anchors[level])
        torch.testing.assert_close(out, ref)


# ------------------------------------------------------------------------------ NMS settings
def test_class_agnostic_follows_the_config(tmp_path):
    """test_cfg.nms.class_agnostic=True: metadata, no two kept boxes overlap above the IoU
    threshold whatever their labels (per-class keeps such pairs), equal to mmdet's predict and
    in ONNX Runtime."""
    from mmext.deploy.detector_export import (DetectorWrapper, detector_settings,
                                              export_detector_model, fuse_for_deploy)
    from mmext.deploy.detector_runtime import DetectorSession, postprocess, preprocess
    # score_thr 0.3: fewer than 10000 candidates reach mmdet's NMS (from 10000 on, mmcv's
    # batched_nms runs one NMS per class whatever class_agnostic says: its split_thr)
    cfg, detector = build_tiny('rtmdet_mmdet', score_thr=0.3)
    cfg.model.test_cfg.nms.class_agnostic = True
    detector.bbox_head.test_cfg.nms.class_agnostic = True
    out = str(tmp_path / 'agnostic.onnx')
    info = export_detector_model(detector, cfg, out, [str(i) for i in range(80)],
                                 input_size=(128, 128))
    meta = info['meta']
    assert meta['class_agnostic'] is True
    x, pinfo = preprocess(sample_image(128, 128, seed=11), meta)
    dets, labels = DetectorSession(out).run(x)
    agnostic = postprocess(dets[0], labels[0], pinfo)
    theirs = clip_to(mmdet_predict(detector, x, [pinfo])[0], pinfo)
    assert_same_detections(theirs, agnostic, meta['max_per_img'], 'class-agnostic')

    def worst_overlap(boxes, labels, across):
        b = torch.as_tensor(boxes)
        lt = torch.max(b[:, None, :2], b[None, :, :2])
        rb = torch.min(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        area = (b[:, 2:] - b[:, :2]).prod(-1)
        iou = inter / (area[:, None] + area[None] - inter)
        lab = torch.as_tensor(labels)
        pair = (lab[:, None] != lab[None]) if across else (lab[:, None] == lab[None])
        pair &= ~torch.eye(len(b), dtype=torch.bool)
        return float(iou[pair].max()) if pair.any() else 0.0

    assert worst_overlap(agnostic['bboxes'], agnostic['labels'], True) <= meta['iou_threshold']
    assert (labels < 0).any(), 'score_thr 0.3 leaves fewer than K rows'
    assert_padding_rows(dets, labels, meta['score_thr'])
    settings = detector_settings(cfg, detector, (128, 128))
    settings['class_agnostic'] = False
    per_class = DetectorWrapper(fuse_for_deploy(copy.deepcopy(detector)), settings).eval()
    with torch.no_grad():
        d, l = per_class(torch.from_numpy(x))
    kept = postprocess(d[0].numpy(), l[0].numpy(), pinfo)
    assert worst_overlap(kept['bboxes'], kept['labels'], True) > meta['iou_threshold']
    assert worst_overlap(kept['bboxes'], kept['labels'], False) <= meta['iou_threshold']


@pytest.mark.parametrize('name,score_thr,k', [('retinanet_shvit', 0.65, 60),
                                               ('yolox_shvit', 0.4, 100)])
def test_score_threshold_and_max_per_img_follow_the_config(name, score_thr, k):
    """A score_thr that binds (fewer than K detections above it) and another K: the wrapper
    (eager) keeps what mmdet's predict keeps, with the contract's padding rows."""
    from mmext.deploy.detector_export import DetectorWrapper, detector_settings
    from mmext.deploy.detector_runtime import postprocess
    cfg, detector = build_tiny(name, score_thr=score_thr, max_per_img=k)
    if name.startswith('yolox'):
        detector.bbox_head.test_cfg.max_per_img = k
    settings = detector_settings(cfg, detector, (128, 128))
    wrapper = DetectorWrapper(copy.deepcopy(detector), settings).eval()
    x = torch.from_numpy(np.ascontiguousarray(sample_image(128, 128, seed=12).transpose(
        2, 0, 1)[None]).astype(np.float32))
    with torch.no_grad():
        dets, labels = wrapper(x)
    assert dets.shape == (1, k, 5)
    kept = int((labels[0] >= 0).sum())
    assert 5 < kept < k, kept
    assert_padding_rows(dets.numpy(), labels.numpy(), score_thr)
    info = dict(scale_factor=(1.0, 1.0), ori_shape=(128, 128))
    theirs = mmdet_predict(detector, x.numpy(), [dict(info, img_shape=(128, 128),
                                                      pad_shape=(128, 128))])[0]
    assert len(theirs.scores) == kept
    assert_same_detections(clip_to(theirs, info),
                           postprocess(dets[0].numpy(), labels[0].numpy(), info), k,
                           f'score_thr {score_thr}')


def test_nms_pre_is_capped_for_deployment_and_exact_on_request():
    """The graph keeps min(config nms_pre, 1000) pairs per level by default; nms_pre=-1 keeps
    the config's 30000 and equals mmdet's predict; a small nms_pre takes effect (each level
    offers at most that many candidates); 0 or -2 is one clear error."""
    from mmext.deploy.detector_export import DetectorWrapper, detector_settings
    from mmext.errors import ConfigError
    cfg, detector = build_tiny('rtmdet_shvit')
    assert detector_settings(cfg, detector, (128, 128))['nms_pre'] == 1000
    x = torch.from_numpy(np.ascontiguousarray(sample_image(128, 128, seed=13).transpose(
        2, 0, 1)[None]).astype(np.float32))
    info = dict(scale_factor=(1.0, 1.0), ori_shape=(128, 128))
    theirs = mmdet_predict(detector, x.numpy(), [dict(info, img_shape=(128, 128),
                                                      pad_shape=(128, 128))])[0]
    outs = {}
    for nms_pre in (-1, 3):
        settings = detector_settings(cfg, detector, (128, 128), nms_pre=nms_pre)
        assert settings['nms_pre'] == (30000 if nms_pre == -1 else 3)
        assert settings['config_nms_pre'] == 30000
        with torch.no_grad():
            outs[nms_pre] = DetectorWrapper(copy.deepcopy(detector), settings).eval()(x)
    from mmext.deploy.detector_runtime import postprocess
    k = cfg.model.test_cfg.max_per_img
    exact = postprocess(outs[-1][0][0].numpy(), outs[-1][1][0].numpy(), info)
    assert_same_detections(clip_to(theirs, info), exact, k, 'nms_pre=-1')
    assert 0 < int((outs[3][1] >= 0).sum()) <= 3 * 3  # three levels, three pairs each
    for bad in (0, -2):
        with pytest.raises(ConfigError, match='nms_pre must be a positive number'):
            detector_settings(cfg, detector, (128, 128), nms_pre=bad)


def test_normalisation_outside_the_graph(tmp_path):
    """normalize_in_graph=False: the metadata says so, preprocess flips and normalises (the pad
    too, as mmdet's preprocessor pads after normalising), and the detections equal those of the
    wrapper that normalises itself."""
    import onnx
    from mmext.deploy.detector_export import (DetectorWrapper, detector_settings,
                                              export_detector_model, fuse_for_deploy)
    from mmext.deploy.detector_runtime import DetectorSession, preprocess
    cfg, detector = build_tiny('retinanet_shvit')
    out = str(tmp_path / 'raw.onnx')
    info = export_detector_model(detector, cfg, out, [str(i) for i in range(80)],
                                 input_size=(96, 128), normalize_in_graph=False, dynamic=False)
    meta = info['meta']
    assert meta['normalize_in_graph'] is False and info['input_shape'] == [1, 3, 96, 128]
    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 96, 128]
    image = sample_image(72, 128, seed=13)  # resized to 72 x 128, padded to 96 x 128
    x, pinfo = preprocess(image, meta)
    assert x.shape == (1, 3, 96, 128) and np.allclose(x[0, :, 72:], 0, atol=1e-6)
    assert np.abs(x).max() < 3  # normalised
    pixels, _ = preprocess(image, dict(meta, normalize_in_graph=True))
    settings = detector_settings(cfg, detector, (96, 128))
    wrapper = DetectorWrapper(fuse_for_deploy(copy.deepcopy(detector)), settings).eval()
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(pixels))
    from mmext.deploy.detector_export import compare_detections
    dets, labels = DetectorSession(out).run(x)
    result = compare_detections(ref[0].numpy(), ref[1].numpy(), dets, labels)
    assert result['ok'], result['problem']


def test_postprocess_drops_padding_rescales_and_clips():
    from mmext.deploy.detector_runtime import postprocess
    dets = np.array([[[10, 20, 50, 300, 0.9], [-8, 4, 16, 8, 0.5], [2, 2, 4, 4, 0.2],
                      [0, 0, 0, 0, 0]]], np.float32)
    labels = np.array([[3, 1, 2, -1]])
    info = dict(scale_factor=(2.0, 0.5), ori_shape=(100, 30))
    out = postprocess(dets, labels, info)
    np.testing.assert_allclose(out['bboxes'], [[5, 40, 25, 100], [0, 8, 8, 16], [1, 4, 2, 8]])
    np.testing.assert_allclose(out['scores'], [0.9, 0.5, 0.2])
    assert out['labels'].tolist() == [3, 1, 2] and out['labels'].dtype == np.int64
    assert postprocess(dets[0], labels[0], info, score_thr=0.5)['labels'].tolist() == [3]


# ------------------------------------------------------------------------------ refusals
def test_existing_output_is_refused_without_force(tmp_path, capsys):
    from mmext.apis import export_detector
    from mmext.errors import ConfigError, OutputError
    out = tmp_path / 'det.onnx'
    out.write_bytes(b'precious')
    with pytest.raises(OutputError, match='already exists; pass --force'):
        export_detector(MMDET_RTMDET, None, str(out))
    err = user_error(capsys, [MMDET_RTMDET, 'none', str(out), '--shape', '96'])
    assert 'already exists' in err and '--force' in err
    assert out.read_bytes() == b'precious'
    with pytest.raises(ConfigError, match='does not end in .onnx'):
        export_detector(MMDET_RTMDET, None, str(tmp_path / 'det.pth'))
    err = user_error(capsys, ['configs/mask_rcnn/shvit_s1_fpn_1x_coco.py', 'none',
                              str(tmp_path / 'm.onnx')])
    assert 'MaskRCNN is not a single-stage detector' in err
    bad = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'backbone.stem.weight': torch.zeros(3)}), str(bad))
    err = user_error(capsys, [MMDET_RTMDET, str(bad), str(tmp_path / 'c.onnx')])
    assert 'does not fit the model' in err
    assert sorted(os.listdir(tmp_path)) == ['det.onnx', 'other.pth']


def user_error(capsys, argv):
    return cli_error(capsys, 'export_detector', argv)


def test_cli_force_replaces_and_prints_one_summary(tmp_path, capsys):
    from mmext.deploy.detector_runtime import read_metadata
    from mmext.errors import run_cli
    out = tmp_path / 'tiny.onnx'
    out.write_bytes(b'old')
    run_cli(load_tool('export_detector').main,
            [MMDET_RTMDET, 'none', str(out), '--shape', '96', '128', '--force',
             '--cfg-options', 'model.test_cfg.max_per_img=50'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'wrote {out}') and 'K=50' in lines[0]
    meta = read_metadata(str(out))
    assert meta['input_size'] == [96, 128] and meta['max_per_img'] == 50
    assert meta['config'] == 'rtmdet_tiny_8xb32-300e_coco.py'
    assert sorted(os.listdir(tmp_path)) == ['tiny.onnx']


def test_wrong_files_and_settings_are_one_line_errors(tmp_path):
    from mmext.compat.onnx_export import onnx_export
    from mmext.deploy.detector_runtime import DetectorSession, read_metadata
    from mmext.errors import ConfigError
    text = tmp_path / 'notes.onnx'
    text.write_text('not a graph')
    plain = str(tmp_path / 'conv.onnx')
    onnx_export(nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8), ), plain, exporter='torchscript',
                opset_version=17)
    for path in (str(text), plain, str(tmp_path / 'missing.onnx')):
        for call in (read_metadata, DetectorSession):
            with pytest.raises(ConfigError) as exc:
                call(path)
            message = str(exc.value)
            assert '\n' not in message and 'export it with tools/export_detector.py' in message
            if path != str(tmp_path / 'missing.onnx'):
                assert message.startswith('not an mmext detector export')


def test_session_settings_are_checked(exports, monkeypatch):
    import sys
    from mmext.deploy.detector_runtime import DetectorSession
    from mmext.errors import ConfigError, MmextError
    out = exports('rtmdet_mmdet')['out']
    with pytest.raises(ConfigError, match='bf16 is not offered on ONNX Runtime'):
        DetectorSession(out, precision='bf16')
    with pytest.raises(ConfigError, match='unknown backend'):
        DetectorSession(out, backend='tensorrt')
    with pytest.raises(ConfigError, match='int8 on OpenVINO runs an int8'):
        DetectorSession(out, backend='openvino', precision='int8')
    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(MmextError, match=r'pip install mmext\[openvino\]'):
        DetectorSession(out, backend='openvino')


def test_openvino_runs_the_file(exports):
    """OpenVINO's CPU plugin (optional extra): fp32 equals ONNX Runtime, bf16 runs."""
    pytest.importorskip('openvino', reason='OpenVINO not installed (pip install mmext[openvino])')
    from mmext.deploy.detector_export import compare_detections
    from mmext.deploy.detector_runtime import DetectorSession, preprocess
    exported = exports('rtmdet_shvit')
    ref = DetectorSession(exported['out'])
    x = np.concatenate([preprocess(sample_image(128, 160, seed=s), ref.meta)[0] for s in (1, 2)])
    d0, l0 = ref.run(x)
    d1, l1 = DetectorSession(exported['out'], backend='openvino').run(x)
    result = compare_detections(d0, l0, d1, l1)
    assert result['ok'], result['problem']
    d2, l2 = DetectorSession(exported['out'], backend='openvino', precision='bf16').run(x)
    assert d2.shape == d0.shape and (l2 >= 0).sum() > 0


@pytest.mark.slow
def test_int8_session_runs(exports, tmp_path):
    """ONNX Runtime int8 (static QDQ, calibrated on generated images through preprocess):
    finds boxes; the quantized file then runs as int8 as it is (ORT, and OpenVINO if there)."""
    import shutil
    from mmext.deploy.detector_runtime import DetectorSession, read_metadata
    out = exports('rtmdet_shvit')['out']
    session = DetectorSession(out, precision='int8')
    assert session.quantized is False and session.run_path != out
    image = sample_image(200, 160, seed=3)
    result = session.predict([image])[0]
    assert len(result['bboxes']) > 0
    int8 = str(tmp_path / 'int8.onnx')
    shutil.copy(session.run_path, int8)
    session.close()
    assert read_metadata(int8) == read_metadata(out)  # the metadata survives quantization
    again = DetectorSession(int8, precision='int8')
    assert again.quantized and again.run_path == int8
    assert len(again.predict([image])[0]['bboxes']) == len(result['bboxes'])
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    assert len(DetectorSession(int8, backend='openvino', precision='int8').predict(
        [image])[0]['bboxes']) > 0


@pytest.mark.slow
def test_openvino_int8_ir_keeps_metadata_float_part_and_boxes(exports, tmp_path):
    """NNCF on OpenVINO's model of the export: an IR (.xml + .bin) with the export's metadata,
    int8 convolutions, the heads' output convs and decode/NMS float; DetectorSession and predict
    run it on OpenVINO and refuse it on ONNX Runtime; a wrong suffix is one clear error."""
    from mmext.deploy.runners import module_version
    if module_version('nncf') is None or module_version('openvino') is None:
        # not installed, or not importable here (NNCF 3.4 with torch 2.1: no torch.uint16)
        pytest.skip('NNCF/OpenVINO not importable (pip install mmext[openvino])')
    import openvino as ov
    from mmext.deploy.detector_openvino import float_part, quantize_openvino, quantized_ops
    from mmext.deploy.detector_runtime import DetectorSession, preprocess, read_metadata
    from mmext.errors import ConfigError
    out = exports('rtmdet_shvit')['out']
    meta = read_metadata(out)
    batches = [preprocess(sample_image(160, 160, seed=s), meta)[0] for s in range(3)]
    xml = str(tmp_path / 'det.int8.xml')
    info = quantize_openvino(out, xml, batches)
    assert sorted(os.listdir(tmp_path)) == ['det.int8.bin', 'det.int8.xml']
    assert read_metadata(xml) == meta
    saved = ov.Core().read_model(xml)  # the float part found on the written file itself
    last, down = float_part(saved)
    types = {op.get_friendly_name(): op.get_type_name() for op in saved.get_ordered_ops()}
    # rtm_cls x 3 levels, rtm_reg x 3 (conversion folds the stride multiply in: named after it)
    assert len(last) == 6 and {types[n] for n in last} == {'Convolution'}
    assert sum('rtm_cls' in n for n in last) == 3 and len(info['float_last']) == 6
    assert 'NonMaxSuppression' in {types[n] for n in down}
    quantized = quantized_ops(xml)
    assert not set(quantized) & (set(last) | set(down))
    assert sum(t in ('Convolution', 'GroupConvolution') for t in quantized.values()) > 20
    # SHViT's single-head attention -> NNCF's transformer mode; mmdet's CSPNeXt (convolutions
    # only) has no attention product -> its default mode
    from mmext.deploy.detector_openvino import attention_products
    attention = attention_products(ov.Core().read_model(out))
    assert info['model_type'] == 'transformer' and info['attention_products'] == len(attention) > 0
    assert attention_products(ov.Core().read_model(exports('rtmdet_mmdet')['out'])) == []
    ref = DetectorSession(out).predict([sample_image(160, 160, seed=1)])[0]
    session = DetectorSession(xml, backend='openvino', precision='int8')
    assert session.quantized
    got = session.predict([sample_image(160, 160, seed=1)])[0]
    assert len(got['bboxes']) > 0.5 * len(ref['bboxes'])
    # the float rest runs bf16 where the CPU has it, but decoding stays f32: boxes in bf16 would
    # sit on its grid (steps of 0.5 between 64 and 128 px), f32 boxes almost never do
    from mmext.deploy.detector_runtime import openvino_config, openvino_native_bf16
    hint = openvino_config('int8')['INFERENCE_PRECISION_HINT']
    assert hint == ('bf16' if openvino_native_bf16() else 'f32')
    dets, _ = session.run(np.concatenate(batches[:1]))
    coords = dets[..., :4][(dets[..., :4] > 64) & (dets[..., :4] < 128)]
    assert coords.size > 20
    on_grid = np.mean(coords * 2 == np.round(coords * 2))
    assert on_grid < 0.5, f'{on_grid:.0%} of the box coordinates on the bf16 grid'
    with pytest.raises(ConfigError, match="backend='openvino'"):
        DetectorSession(xml)
    with pytest.raises(ConfigError, match='must end in .xml'):
        quantize_openvino(out, str(tmp_path / 'det.int8.onnx'), batches)


def test_compare_detections_tolerates_tied_groups_only():
    """Two overlapping boxes of one class tied at score 1.0: either may survive NMS (candidate
    order); the stand-in of the same label and score passes. A missing box whose score is not
    tied, or a tied group without any detection of its label, still fails."""
    from mmext.deploy.detector_export import compare_detections

    def out(rows):
        dets = np.zeros((1, 4, 5))
        labels = np.full((1, 4), -1)
        for i, (box, score, label) in enumerate(rows):
            dets[0, i, :4], dets[0, i, 4], labels[0, i] = box, score, label
        return dets, labels

    ref = out([([0, 0, 50, 50], 1.0, 3), ([200, 0, 260, 60], 1.0, 3), ([0, 100, 30, 130], .5, 1)])
    swapped = out([([5, 5, 55, 55], 1.0, 3), ([200, 0, 260, 60], 1.0, 3),
                   ([0, 100, 30, 130], .5, 1)])
    assert compare_detections(*ref, *swapped)['ok']
    other_label = out([([5, 5, 55, 55], 1.0, 4), ([200, 0, 260, 60], 1.0, 4),
                       ([0, 100, 30, 130], .5, 1)])
    assert not compare_detections(*ref, *other_label)['ok']
    untied = out([([0, 0, 50, 50], 1.0, 3), ([200, 0, 260, 60], 1.0, 3),
                  ([40, 100, 70, 130], .5, 1)])
    result = compare_detections(*ref, *untied)
    assert not result['ok'] and 'detection 2' in result['problem']


@pytest.mark.slow
def test_openvino_runs_edgevit_detector_at_each_shape(tmp_path):
    """EdgeViT's detector graph: OpenVINO's dynamic-shape inference gave its outputs a batch of
    0; the session compiles each input shape (batch 1 and 2, two sizes) and equals ONNX
    Runtime."""
    pytest.importorskip('openvino', reason='OpenVINO not installed (pip install mmext[openvino])')
    from mmext.deploy.detector_export import compare_detections, export_detector_model
    from mmext.deploy.detector_runtime import DetectorSession, preprocess
    cfg, detector = build_tiny('configs/rtmdet/edgevit_xxs_rtmdet_tiny_4xb32-100e_coco.py')
    out = str(tmp_path / 'edgevit.onnx')
    export_detector_model(detector, cfg, out, [str(i) for i in range(80)])
    ref = DetectorSession(out)
    session = DetectorSession(out, backend='openvino')
    for size, seeds in (((160, 160), (1, )), ((128, 192), (2, 3))):
        x = np.concatenate([preprocess(sample_image(*size, seed=s), ref.meta)[0] for s in seeds])
        d0, l0 = ref.run(x)
        d1, l1 = session.run(x)
        assert d1.shape == d0.shape and d1.shape[0] == len(seeds)
        result = compare_detections(d0, l0, d1, l1)
        assert result['ok'], result['problem']


@pytest.mark.slow
def test_openvino_dynamic_shapes_and_nncf_take_edgevit_detector(tmp_path):
    """The delegate grid of EdgeViT's global attention is ceil(H/r) by arithmetic in the graph:
    read from the strided slice's shape, OpenVINO's dynamic-shape inference took H (a Reshape
    failed at run time), and NNCF's calibration -- which runs the dynamic model -- with it.
    Here the file compiles with dynamic shapes, equals ONNX Runtime at two sizes, and quantizes."""
    ov = pytest.importorskip('openvino', reason='OpenVINO not installed (pip install mmext[openvino])')
    from mmext.deploy.detector_export import compare_detections, export_detector_model
    from mmext.deploy.detector_runtime import DetectorSession, preprocess
    cfg, detector = build_tiny('configs/rtmdet/edgevit_xxs_rtmdet_tiny_4xb32-100e_coco.py')
    out = str(tmp_path / 'edgevit.onnx')
    export_detector_model(detector, cfg, out, [str(i) for i in range(80)])
    ref = DetectorSession(out)
    compiled = ov.Core().compile_model(out, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32',
                                                    'INFERENCE_NUM_THREADS': 1})
    batches = []
    for size, seeds in (((160, 160), (1, )), ((128, 192), (2, 3))):
        x = np.concatenate([preprocess(sample_image(*size, seed=s), ref.meta)[0] for s in seeds])
        d0, l0 = ref.run(x)
        result = compiled({0: x})
        d1, l1 = result[compiled.outputs[0]], result[compiled.outputs[1]]
        assert d1.shape == d0.shape, (d1.shape, d0.shape)
        check = compare_detections(d0, l0, d1, l1)
        assert check['ok'], check['problem']
        batches.append(x[:1])
    try:
        import nncf  # noqa: F401
    except Exception:  # noqa: BLE001  (NNCF 3.4 does not import beside torch 2.1)
        return
    from mmext.deploy.detector_openvino import (attention_products, quantize_openvino,
                                                quantized_ops)
    xml = str(tmp_path / 'edgevit.int8.xml')
    info = quantize_openvino(out, xml, batches[:1])
    d2, _ = DetectorSession(xml, backend='openvino').run(batches[0])
    assert d2.shape[0] == 1 and np.isfinite(d2).all()
    # the global attention's products (q k^T, attn v: a MatMul of two activations; the linear
    # layers' MatMuls have constant weights) -> NNCF's transformer mode, which makes them int8
    for model in (ov.Core().read_model(out), ov.convert_model(out)):  # SDPA fused in the second
        attention = attention_products(model)
        assert attention and all('/global_attn/attn/' in name for name in attention), attention
    assert info['model_type'] == 'transformer' and 'transformer mode' in info['note']
    assert info['attention_products'] == len(attention)
    int8_types = quantized_ops(xml)
    assert sum(name in int8_types for name in attention) >= 2, attention
