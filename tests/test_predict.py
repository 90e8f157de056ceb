"""tools/predict.py and mmext.apis.predict: a real tiny RetinaNet (SHViT-S1, 96 px, 32-channel
head) with a checkpoint written by torch.save and read back, on the generated demo images,
a folder, a glob and a generated 5-frame video; the JSON is checked against mmdet's own
inference_detector (and DetInferencer), the outputs against the inputs' sizes and frame counts.
"""
import copy
import glob
import importlib
import json
import os
import os.path as osp
import stat
import subprocess
import sys

import numpy as np
import pytest

from .runtime_helpers import REPO_ROOT, build_config_model, tiny_retinanet_config

SCORE_THR = 0.2
VIDEO_SIZE = (160, 120)  # w, h: not square, so a swapped width/height shows
VIDEO_FRAMES = 5


def _predict_module():
    # ``mmext.apis.predict`` the attribute is the function; the module is in sys.modules
    return importlib.import_module('mmext.apis.predict')


@pytest.fixture(scope='module')
def tiny(coco_demo, tmp_path_factory):
    """Config, checkpoint (with the demo classes in its meta), images, a video, and mmdet's own
    detector loaded from the same files (the reference)."""
    import cv2
    import torch
    root = tmp_path_factory.mktemp('predict')
    cfg = tiny_retinanet_config(root / 'tiny.py', coco_demo, max_epochs=1, random_aug=False)
    torch.manual_seed(0)
    model = build_config_model(cfg)
    with torch.no_grad():  # scores spread over (0, 1), so thresholds and drawing matter
        head = model.bbox_head.retina_cls
        head.bias.normal_(-2.0, 1.0)
        head.weight.normal_(0.0, 0.05)
    ckpt = str(root / 'tiny.pth')
    torch.save(dict(meta=dict(epoch=1, iter=2, dataset_meta=dict(
        classes=list(coco_demo['classes']), palette=coco_demo['metainfo']['palette'])),
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()}), ckpt)
    images = sorted(glob.glob(osp.join(coco_demo['data_root'], 'val', '*.jpg')))
    assert len(images) == 2
    video = str(root / 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 7.0, VIDEO_SIZE)
    train = sorted(glob.glob(osp.join(coco_demo['data_root'], 'train', '*.jpg')))
    for i in range(VIDEO_FRAMES):
        writer.write(cv2.resize(cv2.imread(train[i % len(train)]), VIDEO_SIZE))
    writer.release()
    import mmext  # noqa: F401
    from mmdet.apis import init_detector
    from mmext.compat import weights_only_checkpoints
    with weights_only_checkpoints():
        reference = init_detector(cfg, ckpt, device='cpu')
    # explicit pipelines: inference_detector's own, made from a shallow copy of the config,
    # turns the model's first step into LoadImageFromNDArray for good after an array
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    pipelines = {}
    for kind in ('path', 'array'):
        steps = copy.deepcopy(get_test_pipeline_cfg(reference.cfg))
        if kind == 'array':
            steps[0].type = 'mmdet.LoadImageFromNDArray'
        pipelines[kind] = Compose(steps)
    return dict(cfg=cfg, ckpt=ckpt, images=images, video=video, root=root,
                reference=reference, pipelines=pipelines, classes=list(coco_demo['classes']))


def _reference(tiny, img, thr=SCORE_THR):
    """mmdet's inference_detector on a path or a BGR array, above ``thr``."""
    from mmdet.apis import inference_detector
    kind = 'path' if isinstance(img, str) else 'array'
    inst = inference_detector(tiny['reference'], img,
                              test_pipeline=tiny['pipelines'][kind]).pred_instances
    keep = inst.scores > thr
    return dict(labels=inst.labels[keep].tolist(), scores=inst.scores[keep].numpy(),
                bboxes=inst.bboxes[keep].numpy())


def _assert_same(pred, ref):
    assert pred['labels'] == ref['labels']
    np.testing.assert_allclose(np.asarray(pred['scores'], dtype=np.float32), ref['scores'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pred['bboxes'], dtype=np.float32).reshape(-1, 4),
                               ref['bboxes'], rtol=1e-5, atol=1e-3)


def _run(tiny, source, out_dir, **kwargs):
    from mmext.apis import predict
    kwargs.setdefault('score_thr', SCORE_THR)
    kwargs.setdefault('progress', False)
    kwargs.setdefault('verbose', False)
    return predict(tiny['cfg'], source, checkpoint=tiny['ckpt'], out_dir=str(out_dir), **kwargs)


def _no_temp_files(out_dir):
    left = [osp.join(folder, n) for folder, _, names in os.walk(str(out_dir)) for n in names
            if '.part' in n or n.startswith('.')]  # glob would skip hidden files
    assert not left, left


def test_images_folder_and_glob(tiny, tmp_path):
    import cv2
    from mmext.checkpoints.files import normal_mode
    img = tiny['images'][0]
    result = _run(tiny, img, tmp_path / 'one')
    name = osp.basename(img)
    stem = osp.splitext(name)[0]
    vis = tmp_path / 'one' / 'vis' / name
    pred_file = tmp_path / 'one' / 'preds' / f'{stem}.json'
    assert sorted(result['files']) == sorted([str(vis), str(pred_file)])
    # annotated image: the input's size, and something drawn (scores reach above SCORE_THR)
    drawn, original = cv2.imread(str(vis)), cv2.imread(img)
    assert drawn.shape == original.shape
    saved = json.loads(pred_file.read_text())
    assert sorted(saved) == ['bboxes', 'labels', 'scores']  # DetInferencer's keys
    ref = _reference(tiny, img)
    assert len(ref['labels']) > 0, 'the fixture should give detections above the threshold'
    _assert_same(saved, ref)
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100
    # returned dicts equal the file, timings present and positive
    (pred,) = result['predictions']
    assert pred['frame'] is None and pred['path'] == osp.abspath(img)
    assert pred['labels'] == saved['labels'] and pred['bboxes'] == saved['bboxes']
    assert set(result['speed']) == {'preprocess', 'inference', 'postprocess'}
    assert all(v > 0 for v in result['speed'].values()) and all(
        v > 0 for v in pred['speed'].values())
    assert result['shape'][:2] == (1, 3) and result['classes'] == tiny['classes']
    for path in result['files']:
        assert stat.S_IMODE(os.stat(path).st_mode) == normal_mode()
    _no_temp_files(tmp_path / 'one')

    # a folder: every image, sorted; a glob: the same files
    folder = osp.dirname(img)
    by_folder = _run(tiny, folder, tmp_path / 'folder', save_vis=False)
    by_glob = _run(tiny, osp.join(folder, '*.jpg'), tmp_path / 'glob', save_pred=False)
    assert [p['path'] for p in by_folder['predictions']] == tiny['images']
    assert [p['path'] for p in by_glob['predictions']] == tiny['images']
    assert not (tmp_path / 'folder' / 'vis').exists()
    assert not (tmp_path / 'glob' / 'preds').exists()
    for path, pred in zip(tiny['images'], by_folder['predictions']):
        stem = osp.splitext(osp.basename(path))[0]
        _assert_same(json.loads((tmp_path / 'folder' / 'preds' / f'{stem}.json').read_text()),
                     _reference(tiny, path))
        assert cv2.imread(str(tmp_path / 'glob' / 'vis' / osp.basename(path))).shape == \
            cv2.imread(path).shape


def test_video(tiny, tmp_path):
    import cv2
    result = _run(tiny, tiny['video'], tmp_path)
    out_video = tmp_path / 'vis' / 'clip.mp4'
    cap = cv2.VideoCapture(str(out_video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert len(frames) == VIDEO_FRAMES
    assert frames[0].shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3)
    assert fps == pytest.approx(7.0, abs=0.01)
    saved = json.loads((tmp_path / 'preds' / 'clip.json').read_text())
    assert saved['video'] == 'clip.mp4' and saved['fps'] == pytest.approx(7.0, abs=0.01)
    assert [f['frame'] for f in saved['frames']] == list(range(VIDEO_FRAMES))
    assert [p['frame'] for p in result['predictions']] == list(range(VIDEO_FRAMES))
    # each frame's detections are mmdet's on that frame as decoded from the input video
    cap = cv2.VideoCapture(tiny['video'])
    for entry in saved['frames']:
        ok, frame = cap.read()
        assert ok
        _assert_same(entry, _reference(tiny, frame))
    cap.release()
    _no_temp_files(tmp_path)


def test_existing_outputs_are_not_replaced(tiny, tmp_path):
    img = tiny['images'][1]
    name = osp.basename(img)
    vis = tmp_path / 'vis' / name
    pred = tmp_path / 'preds' / (osp.splitext(name)[0] + '.json')
    pred.parent.mkdir(parents=True)
    pred.write_text('{"mine": 1}')
    from mmext.errors import OutputError
    with pytest.raises(OutputError, match='already exist.*--force'):
        _run(tiny, img, tmp_path)
    assert pred.read_text() == '{"mine": 1}' and not vis.exists()  # refused before any work
    result = _run(tiny, img, tmp_path, force=True, score_thr=0.0)
    saved = json.loads(pred.read_text())
    assert 'mine' not in saved and vis.is_file()
    _assert_same(saved, _reference(tiny, img, thr=0.0))
    assert len(result['predictions'][0]['labels']) == len(saved['labels']) > 0
    _no_temp_files(tmp_path)


def test_same_name_from_two_folders_refused(tiny, tmp_path):
    import shutil
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        shutil.copy(tiny['images'][0], tmp_path / sub / 'x.jpg')
    from mmext.errors import OutputError
    with pytest.raises(OutputError, match='would both write'):
        _run(tiny, [str(tmp_path / 'a'), str(tmp_path / 'b')], tmp_path / 'out')
    # an output that would be an input is refused, even with force
    (tmp_path / 'o' / 'vis').mkdir(parents=True)
    shutil.copy(tiny['images'][0], tmp_path / 'o' / 'vis' / 'x.jpg')
    with pytest.raises(OutputError, match='is the input'):
        _run(tiny, str(tmp_path / 'o' / 'vis'), tmp_path / 'o', force=True)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('what', ['missing', 'unknown_ext', 'empty_folder', 'empty_glob',
                                  'damaged_image', 'damaged_video', 'no_checkpoint'])
def test_bad_inputs_one_line_errors(tiny, tmp_path, what):
    from mmext.errors import MmextError
    source = str(tmp_path / 'nothing.jpg')
    kwargs = {}
    if what == 'unknown_ext':
        source = str(tmp_path / 'notes.txt')
        open(source, 'w').write('x')
    elif what == 'empty_folder':
        source = str(tmp_path / 'empty')
        os.mkdir(source)
        open(osp.join(source, 'readme.txt'), 'w').write('x')
    elif what == 'empty_glob':
        source = str(tmp_path / '*.png')
    elif what == 'damaged_image':
        source = str(tmp_path / 'broken.jpg')
        open(source, 'wb').write(b'not a jpeg')
    elif what == 'damaged_video':
        source = str(tmp_path / 'broken.mp4')
        open(source, 'wb').write(b'not a video')
    elif what == 'no_checkpoint':
        source = tiny['images'][0]
    from mmext.apis import predict
    with pytest.raises(MmextError) as info:
        predict(tiny['cfg'], source, checkpoint=None if what == 'no_checkpoint' else tiny['ckpt'],
                out_dir=str(tmp_path / 'out'), progress=False, verbose=False, **kwargs)
    message = str(info.value)
    assert '\n' not in message
    if what != 'no_checkpoint':
        assert osp.basename(source) in message or source in message
    assert not glob.glob(str(tmp_path / 'out' / '*' / '*'))  # nothing written


def test_argument_types_checked():
    from mmext.apis import predict
    from mmext.errors import ArgumentError
    with pytest.raises(ArgumentError, match='score_thr'):
        predict('x.py', 'a.jpg', score_thr='high')
    with pytest.raises(ArgumentError, match='source'):
        predict('x.py', 3)


def test_cli(tiny, tmp_path, capsys):
    """In-process (argument wiring, summary line), then a bad input in a subprocess: one line on
    stderr, no traceback, exit status of run_cli."""
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    try:
        tool = importlib.import_module('predict')
    finally:
        sys.path.remove(osp.join(REPO_ROOT, 'tools'))
    out_dir = tmp_path / 'cli'
    tool.main([tiny['cfg'], tiny['images'][0], '--checkpoint', tiny['ckpt'], '--out-dir',
               str(out_dir), '--score-thr', '0.5', '--no-progress'])
    printed = capsys.readouterr().out
    assert 'Speed: ' in printed and 'ms preprocess' in printed and \
        'per image at shape (1, 3, ' in printed and str(out_dir) in printed
    stem = osp.splitext(osp.basename(tiny['images'][0]))[0]
    saved = json.loads((out_dir / 'preds' / f'{stem}.json').read_text())
    assert all(s > 0.5 for s in saved['scores'])

    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    missing = str(tmp_path / 'missing.jpg')
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', 'predict.py'),
                           tiny['cfg'], missing, '--checkpoint', tiny['ckpt'], '--out-dir',
                           str(tmp_path / 'x')], capture_output=True, text=True, timeout=120,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: ') and missing in lines[0], \
        proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.filterwarnings('ignore:Failed to add')
def test_mmdet_det_inferencer_runs_mmext_configs(tiny, tmp_path):
    """Documented: after ``import mmext``, mmdet's DetInferencer takes an mmext config and its
    checkpoint; its JSON equals predict's (score_thr=0: everything the model returns)."""
    import mmext  # noqa: F401
    from mmdet.apis import DetInferencer
    img = tiny['images'][0]
    inferencer = DetInferencer(model=tiny['cfg'], weights=tiny['ckpt'], device='cpu',
                               show_progress=False)
    out = inferencer(img, return_datasamples=False, no_save_vis=True, no_save_pred=False,
                     out_dir=str(tmp_path / 'mmdet'))
    (theirs,) = out['predictions']
    ours = _run(tiny, img, tmp_path / 'ours', score_thr=0.0, save_vis=False)
    (mine,) = ours['predictions']
    assert mine['labels'] == theirs['labels']
    np.testing.assert_allclose(mine['scores'], theirs['scores'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine['bboxes'], theirs['bboxes'], rtol=1e-5, atol=1e-3)
    stem = osp.splitext(osp.basename(img))[0]
    file_theirs = json.loads((tmp_path / 'mmdet' / 'preds' / f'{stem}.json').read_text())
    file_mine = json.loads((tmp_path / 'ours' / 'preds' / f'{stem}.json').read_text())
    assert sorted(file_theirs) == sorted(file_mine)


def test_bf16(tiny, tmp_path):
    from mmext.compat import native_bf16
    img = tiny['images'][0]
    if not native_bf16('cpu'):  # refused in one line before the model is built
        from mmext.errors import ConfigError
        with pytest.raises(ConfigError, match='native bf16'):
            _run(tiny, img, tmp_path, bf16=True)
        return
    result = _run(tiny, img, tmp_path, bf16=True, save_vis=False)
    (pred,) = result['predictions']
    ref = _reference(tiny, img, thr=0.0)
    assert len(pred['labels']) > 0 and all(v > 0 for v in result['speed'].values())
    assert abs(pred['scores'][0] - float(ref['scores'][0])) < 0.05


def test_fuse_gives_the_same_detections(tiny, tmp_path):
    img = tiny['images'][0]
    fused = _run(tiny, img, tmp_path, fuse=True, save_vis=False)['predictions'][0]
    ref = _reference(tiny, img)
    assert fused['labels'][:5] == ref['labels'][:5]
    np.testing.assert_allclose(fused['scores'][:5], ref['scores'][:5], atol=1e-3)


@pytest.mark.slow
def test_two_stage_with_masks(coco_demo, tiny, tmp_path):
    """Mask R-CNN: timed as one ``predict`` (no single-stage split); boxes as mmdet's, masks
    written as COCO RLE of the original image's size, as DetInferencer writes them."""
    import torch
    from pycocotools import mask as mask_utils
    from mmdet.apis import inference_detector, init_detector
    from mmext.compat import weights_only_checkpoints
    from .runtime_helpers import config_path, det_overrides, save_training_checkpoint, \
        write_config
    data = dict(coco_demo, img_size=96)
    cfg = write_config(tmp_path / 'mask.py', config_path('mask_rcnn/shvit_s1_fpn_1x_coco.py'),
                       det_overrides(data, 'mask_rcnn', width=32))
    torch.manual_seed(0)
    ckpt = save_training_checkpoint(tmp_path / 'mask.pth', build_config_model(cfg))
    img = tiny['images'][0]
    from mmext.apis import predict
    result = predict(cfg, img, checkpoint=ckpt, out_dir=str(tmp_path / 'out'), score_thr=0.0,
                     progress=False, verbose=False)
    (pred,) = result['predictions']
    import warnings
    # init_detector's own simplefilter('once') outranks a filterwarnings mark
    with weights_only_checkpoints(), warnings.catch_warnings(record=True):
        reference = init_detector(cfg, ckpt, device='cpu')
    inst = inference_detector(reference, img).pred_instances
    assert pred['labels'] == inst.labels.tolist()
    np.testing.assert_allclose(pred['bboxes'], inst.bboxes.numpy(), rtol=1e-5, atol=1e-3)
    stem = osp.splitext(osp.basename(img))[0]
    saved = json.loads((tmp_path / 'out' / 'preds' / f'{stem}.json').read_text())
    assert sorted(saved) == ['bboxes', 'labels', 'masks', 'scores']
    assert len(saved['masks']) == len(saved['labels']) > 0
    decoded = mask_utils.decode([dict(m, counts=m['counts'].encode()) for m in saved['masks']])
    assert decoded.shape[:2] == (coco_demo['img_size'], coco_demo['img_size'])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), inst.masks.numpy())
    assert all(v > 0 for v in result['speed'].values())


# ------------------------------------------------------------------------- exported detectors
def _export_function():
    """``export_detector`` (config, checkpoint, out, ...) where this checkout has it."""
    try:
        from mmext.apis import export_detector
    except ImportError:
        try:
            export_detector = importlib.import_module('mmext.apis.export_detector')
        except ImportError:
            return None
    return getattr(export_detector, 'export_detector', export_detector)


def _has_runtime():
    try:
        importlib.import_module('mmext.deploy.detector_runtime')
    except ImportError:
        return False
    return _export_function() is not None


@pytest.fixture(scope='module')
def exported(tiny):
    if not _has_runtime():
        pytest.skip('the exported-detector runtime and export_detector '
                    '(mmext.deploy.detector_runtime, mmext.apis.export_detector) are not in '
                    'this checkout')
    path = str(tiny['root'] / 'tiny.onnx')
    _export_function()(tiny['cfg'], tiny['ckpt'], path)
    return path


@pytest.mark.slow
def test_exported_detector(tiny, exported, tmp_path):
    """An .onnx export through ONNX Runtime: the runtime's own predictions, written in the same
    formats, close to the PyTorch model's."""
    import cv2
    from mmext.deploy.detector_runtime import DetectorSession
    result = predict_any(exported, [tiny['images'][0], tiny['video']], tmp_path)
    img = tiny['images'][0]
    name = osp.basename(img)
    stem = osp.splitext(name)[0]
    saved = json.loads((tmp_path / 'preds' / f'{stem}.json').read_text())
    assert sorted(saved) == ['bboxes', 'labels', 'scores']
    session = DetectorSession(exported, threads=1)
    (own,) = session.predict([cv2.imread(img)], score_thr=SCORE_THR)
    session.close()
    _assert_same(saved, dict(labels=own['labels'].tolist(), scores=own['scores'],
                             bboxes=own['bboxes']))
    torch_ref = _reference(tiny, img)
    assert len(torch_ref['labels']) > 0
    top = min(5, len(torch_ref['labels']))
    assert saved['labels'][:top] == torch_ref['labels'][:top]
    np.testing.assert_allclose(saved['scores'][:top], torch_ref['scores'][:top], atol=1e-3)
    np.testing.assert_allclose(saved['bboxes'][:top], torch_ref['bboxes'][:top], atol=0.1)
    assert cv2.imread(str(tmp_path / 'vis' / name)).shape == cv2.imread(img).shape
    frames = json.loads((tmp_path / 'preds' / 'clip.json').read_text())['frames']
    assert [f['frame'] for f in frames] == list(range(VIDEO_FRAMES))
    assert len(result['predictions']) == 1 + VIDEO_FRAMES
    assert all(v > 0 for v in result['speed'].values())
    assert result['classes'] == tiny['classes']
    try:
        import openvino  # noqa: F401
    except ImportError:  # a missing backend is one line naming what to install
        from mmext.errors import MmextError
        with pytest.raises(MmextError, match='pip install') as info:
            predict_any(exported, img, tmp_path / 'ov', backend='openvino')
        assert '\n' not in str(info.value)


def predict_any(model, source, out_dir, **kwargs):
    from mmext.apis import predict
    return predict(model, source, out_dir=str(out_dir), score_thr=SCORE_THR, progress=False,
                   verbose=False, **kwargs)


def test_exported_detector_errors(tiny, tmp_path):
    from mmext.errors import MmextError
    img = tiny['images'][0]
    with pytest.raises(MmextError, match='does not exist'):
        predict_any(str(tmp_path / 'none.onnx'), img, tmp_path / 'a')
    fake = tmp_path / 'fake.onnx'
    fake.write_bytes(b'not onnx')
    with pytest.raises(MmextError, match='checkpoint.*not to an exported model'):
        predict_any(str(fake), img, tmp_path / 'b', checkpoint=tiny['ckpt'])
    if _has_runtime():
        with pytest.raises(MmextError) as info:
            predict_any(str(fake), img, tmp_path / 'c')
        assert '\n' not in str(info.value) and 'fake.onnx' in str(info.value)
