"""``mmext.apis.quantize_detector`` / ``tools/quantize_detector.py``: an exported tiny RTMDet +
SHViT-S1 (160 x 160, random weights with spread-out scores) to ONNX Runtime int8 (``.onnx``) and
OpenVINO int8 (``.xml`` + ``.bin``), calibrated on a folder of images; the files keep the
export's metadata, run in DetectorSession and stay close to the fp32 export on an image; every
refusal is one line and leaves the files as they were."""
import os
import os.path as osp

import pytest

from tests.helpers import cli_error, load_tool
from tests.test_export_detector import SHVIT_RTMDET, build_tiny, sample_image

pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``(onnx path, image folder)``: the tiny detector's export and 5 calibration images."""
    import cv2
    from mmext.deploy.detector_export import export_detector_model
    folder = tmp_path_factory.mktemp('quantize')
    cfg, detector = build_tiny(SHVIT_RTMDET)
    out = str(folder / 'det.onnx')
    export_detector_model(detector, cfg, out, [f'thing{i}' for i in range(80)])
    images = folder / 'images'
    images.mkdir()
    for seed in range(5):
        cv2.imwrite(str(images / f'img{seed}.jpg'), sample_image(160, 160, seed=seed))
    (images / 'notes.txt').write_text('not an image')
    return out, str(images)


def _close_to_fp32(int8_path, fp32_path, backend):
    """int8 keeps most of the fp32 export's confident detections on a fixed image."""
    from mmext.deploy.detector_runtime import DetectorSession
    image = sample_image(160, 160, seed=7)
    ref = DetectorSession(fp32_path).predict([image])[0]
    session = DetectorSession(int8_path, backend=backend, precision='int8')
    assert session.quantized
    got = session.predict([image])[0]
    keep = ref['scores'] > 0.3
    assert keep.sum() > 3
    assert (got['scores'] > 0.3).sum() > 0.5 * keep.sum()


def test_onnxruntime_int8_from_an_image_folder(exported, tmp_path):
    from mmext.apis import quantize_detector
    from mmext.checkpoints.files import normal_mode
    from mmext.deploy.detector_runtime import is_quantized, read_metadata
    onnx_path, images = exported
    out = str(tmp_path / 'det.int8.onnx')
    info = quantize_detector(onnx_path, out, images=images, num=3)
    assert info['backend'] == 'onnxruntime' and info['calibration'] == '3 images'
    assert info['calib_batches'] == 3 and info['files'] == [out]
    assert sorted(os.listdir(tmp_path)) == ['det.int8.onnx']  # no temporary left
    assert os.stat(out).st_mode & 0o777 == normal_mode()
    assert read_metadata(out) == read_metadata(onnx_path) and is_quantized(out)
    assert "heads' 6 output convs" in info['note']
    _close_to_fp32(out, onnx_path, 'onnxruntime')


def test_openvino_int8_ir_with_its_bin(exported, tmp_path):
    from mmext.deploy.runners import module_version
    if module_version('nncf') is None or module_version('openvino') is None:
        pytest.skip('NNCF/OpenVINO not importable (pip install mmext[openvino])')
    from mmext.apis import quantize_detector
    from mmext.deploy.detector_runtime import read_metadata
    onnx_path, images = exported
    out = str(tmp_path / 'det.int8.xml')
    info = quantize_detector(onnx_path, out, images=[osp.join(images, '*.jpg')], num=2)
    assert info['backend'] == 'openvino' and info['calibration'] == '2 images'
    assert info['model_type'] == 'transformer'  # SHViT's attention
    assert sorted(os.listdir(tmp_path)) == ['det.int8.bin', 'det.int8.xml']
    assert info['files'] == [out, str(tmp_path / 'det.int8.bin')]
    assert read_metadata(out) == read_metadata(onnx_path)
    _close_to_fp32(out, onnx_path, 'openvino')


def user_error(capsys, argv):
    return cli_error(capsys, 'quantize_detector', argv)


def test_cli_writes_with_demo_images_and_refuses_in_one_line(exported, tmp_path, capsys):
    """Generated demo images when no --images (said in a note); refusals: an existing output
    (its bytes kept), an .xml whose .bin exists, an unknown suffix, an int8 input, the input as
    the output, videos only, NNCF's mode for ONNX Runtime, --num 0; --force replaces."""
    from mmext.errors import run_cli
    onnx_path, images = exported
    out = tmp_path / 'det.int8.onnx'
    run_cli(load_tool('quantize_detector').main, [onnx_path, str(out), '--num', '1'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f'wrote {out} (') and '1 generated demo images' in lines[0]
    assert lines[1].startswith('note: calibrated on generated demo images')
    before = out.read_bytes()
    assert 'already exists; pass --force' in user_error(capsys, [onnx_path, str(out)])
    assert out.read_bytes() == before
    (tmp_path / 'ir.bin').write_bytes(b'keep')
    assert 'ir.bin' in user_error(capsys, [onnx_path, str(tmp_path / 'ir.xml')])
    assert (tmp_path / 'ir.bin').read_bytes() == b'keep'
    assert 'must end in .onnx' in user_error(capsys, [onnx_path, str(tmp_path / 'x.int8')])
    assert 'already int8' in user_error(capsys, [str(out), str(tmp_path / 'again.onnx')])
    assert 'is the input' in user_error(capsys, [onnx_path, onnx_path, '--force'])
    video = tmp_path / 'clip.mp4'
    video.write_bytes(b'')
    assert 'videos only' in user_error(capsys, [onnx_path, str(tmp_path / 'v.onnx'),
                                                '--images', str(video)])
    assert 'OpenVINO int8 (.xml) only' in user_error(
        capsys, [onnx_path, str(tmp_path / 'm.onnx'), '--model-type', 'cnn'])
    assert '>= 1' in user_error(capsys, [onnx_path, str(tmp_path / 'n.onnx'), '--num', '0'])
    assert sorted(os.listdir(tmp_path)) == ['clip.mp4', 'det.int8.onnx', 'ir.bin']
    run_cli(load_tool('quantize_detector').main,
            [onnx_path, str(out), '--images', images, '--num', '2', '--force'])
    assert 'calibrated on 2 images' in capsys.readouterr().out
    assert out.read_bytes() != before
