"""Static int8 quantization (mmext.deploy.quantize): calibration images (generated demo images
or a user folder), a QDQ graph with per-channel weights whose scales follow the calibration
data, and outputs close to fp32 (cosine per map)."""

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime', reason='int8 quantization needs onnxruntime')
onnx = pytest.importorskip('onnx', reason='int8 quantization needs onnx')

from mmext.deploy import quantize as q  # noqa: E402
from mmext.deploy.export import export_onnx, ort_session  # noqa: E402
from mmext.errors import ConfigError  # noqa: E402


class Tiny(torch.nn.Module):
    """Two convolutions and a linear product over tokens: the ops quantize_onnx quantizes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.conv2 = torch.nn.Conv2d(16, 24, 3, 2, 1)
        self.proj = torch.nn.Linear(24, 32)

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(a))
        c = self.proj(b.flatten(2).transpose(1, 2))
        return a, b, c


@pytest.fixture(scope='module')
def fp32_onnx(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('q') / 'tiny.onnx')
    export_onnx(Tiny().eval(), path, (2, 3, 32, 32), dynamic=False)
    return path


def test_default_calibration_uses_generated_images():
    images = q.calibration_images((32, 48), num=3)
    assert images.shape == (3, 3, 32, 48) and images.dtype == np.float32
    # normalised real pictures: not constant, roughly zero-centred, differ from image to image
    assert images.std() > 0.2 and abs(images.mean()) < 2.5
    assert not np.allclose(images[0], images[1])
    np.testing.assert_array_equal(images, q.calibration_images((32, 48), num=3))


def test_calibration_from_folder(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'{i}.png'), rng.integers(0, 256, (20, 30, 3), np.uint8))
    (tmp_path / 'notes.txt').write_text('not an image')
    images = q.calibration_images((16, 16), num=5, folder=str(tmp_path))
    assert images.shape == (3, 3, 16, 16)
    bgr = cv2.resize(cv2.imread(str(tmp_path / '0.png')), (16, 16))
    expect = (bgr[..., ::-1].astype(np.float32) - q.MEAN) / q.STD
    np.testing.assert_allclose(images[0], expect.transpose(2, 0, 1), atol=1e-5)


def test_calibration_bad_input(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        q.calibration_images((16, 16), folder=str(tmp_path / 'missing'))
    with pytest.raises(ConfigError, match='no .jpg/.png images'):
        q.calibration_images((16, 16), folder=str(tmp_path))
    with pytest.raises(ConfigError, match='at least one image'):
        q.calibration_images((16, 16), num=0)
    with pytest.raises(ConfigError, match='unknown calibration method'):
        q.quantize_onnx('x.onnx', 'y.onnx', np.zeros((1, 3, 8, 8), np.float32), method='avg')


def _weight_scales(path):
    """``{weight name: its DequantizeLinear scale array}`` of a QDQ graph."""
    model = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == 'DequantizeLinear' and inits.get(node.input[0]) is not None \
                and inits[node.input[0]].dtype == np.int8:
            out[node.input[0]] = inits[node.input[1]]
    return model, out


def test_quantize_static_qdq_per_channel(fp32_onnx, tmp_path):
    images = q.calibration_images((32, 32), num=4)
    int8 = str(tmp_path / 'tiny.int8.onnx')
    info = q.quantize_onnx(fp32_onnx, int8, images)
    assert info == dict(calib_images=4, calib_method='minmax', quant_format='QDQ',
                        per_channel=True, float_nodes=0)
    model, scales = _weight_scales(int8)
    ops = {n.op_type for n in model.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    # per-channel: one scale per output channel of each conv weight
    conv_scales = sorted(s.size for s in scales.values())
    assert 16 in conv_scales and 24 in conv_scales, conv_scales
    feed = {'input': images[:2]}
    ref = ort_session(fp32_onnx).run(None, feed)
    out = ort_session(int8).run(None, feed)
    cos = q.cosine_per_map(ref, out)
    assert len(cos) == 3 and min(cos) >= 0.99, cos


def test_keep_float_leaves_the_named_layers_in_float(fp32_onnx, tmp_path):
    """Nodes under a keep_float name stay float (no weight quantization), the rest int8."""
    images = q.calibration_images((32, 32), num=2)
    int8 = str(tmp_path / 'keep.onnx')
    info = q.quantize_onnx(fp32_onnx, int8, images, keep_float=('conv2',))
    assert info['float_nodes'] == 1
    model, scales = _weight_scales(int8)
    assert sorted(s.size for s in scales.values()) == [16, 32], scales  # conv1, proj; not conv2


def test_edgevit_int8_keeps_its_folded_position_encodings_in_float():
    """EdgeViT names its identity-folded position-encoding convs (int8_float_layers): the int8
    runner keeps every one of them in float and quantizes the other convs."""
    from mmext.deploy.runners import make_runner
    from mmext.models import EdgeViT
    model = EdgeViT('xxs').eval()
    x = torch.from_numpy(q.calibration_images((64, 64), num=2, seed=1))
    runner = make_runner(model, 'onnxruntime_int8', x, threads=1, calib=dict(num=2))
    try:
        pos_embeds = sum(name.endswith('pos_embed') for name, _ in model.named_modules())
        assert runner.info['float_nodes'] == pos_embeds == 12  # 7 blocks, 5 with local aggregation
    finally:
        runner.close()


def _activation_scales(path):
    model = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == 'QuantizeLinear' and n.input[0] not in inits}


def test_activation_ranges_follow_calibration_images(fp32_onnx, tmp_path):
    images = q.calibration_images((32, 32), num=2)
    a, b = str(tmp_path / 'a.onnx'), str(tmp_path / 'b.onnx')
    q.quantize_onnx(fp32_onnx, a, images)
    q.quantize_onnx(fp32_onnx, b, images * 10)
    sa, sb = _activation_scales(a), _activation_scales(b)
    assert sa and sa.keys() == sb.keys()
    ratio = sb['input'] / sa['input']
    assert 5 < ratio < 15, ratio


def test_cosine_per_map():
    a = torch.randn(2, 4, 5, 5)
    assert q.cosine_per_map([a], [a * 3])[0] == pytest.approx(1.0)
    assert q.cosine_per_map([a], [-a])[0] == pytest.approx(-1.0)
