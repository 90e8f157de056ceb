"""Every execution mode of mmext.deploy.runners on a tiny input: outputs against eager fp32
within the mode's tolerance (skipped, with the reason, where this machine lacks the mode), bf16
really computing in bf16, bad input as clear errors or skipped rows, strict benchmark args."""

import pytest
import torch

from mmext.benchmark import backbone as bb
from mmext.benchmark.models import build_mmext
from mmext.benchmark.protocols import ARCHS, DEFAULT_MODES, modes_for_device, resolve_modes
from mmext.deploy import runners
from mmext.deploy.runners import MODES, make_runner, skip_reason
from mmext.errors import ConfigError
from mmext.models.families import FAMILIES
from mmext.utils import max_rel_err, output_list
from tests.helpers import load_tool

#: max relative error against eager fp32 per mode (int8 is judged by cosine instead)
TOLERANCE = dict(deploy=1e-4, channels_last=1e-4, compile=1e-4, onnxruntime=1e-4,
                 openvino=1e-4, bf16=3e-2, openvino_bf16=3e-2)
SLOW = ('compile', )


@pytest.fixture(scope='module')
def model_and_ref():
    model = build_mmext(ARCHS['shvit_s1'])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = [t.float() for t in output_list(model(x))]
    return model, x, ref


@pytest.mark.parametrize('mode', [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m
                                  for m in MODES if m != 'eager'])
def test_mode_matches_eager(mode, model_and_ref):
    model, x, ref = model_and_ref
    reason = skip_reason(mode, 'cpu')
    if reason:
        pytest.skip(f'{mode} cannot run here: {reason}')
    runner = make_runner(model, mode, x, threads=1, calib=dict(num=4))
    try:
        out = [t.float() for t in output_list(runner.run())]
        out2 = [t.float() for t in output_list(runner.run())]  # runs again, same result
    finally:
        runner.close()
    assert [o.shape for o in out] == [r.shape for r in ref]
    for a, b in zip(out, out2):
        torch.testing.assert_close(a, b)
    if mode == 'onnxruntime_int8':
        from mmext.deploy.quantize import cosine_per_map
        cos = cosine_per_map(ref, out)
        assert min(cos) >= 0.98, cos
        assert runner.info['calib_images'] == 4 and runner.info['per_channel']
    else:
        assert max_rel_err(ref, out) <= TOLERANCE[mode], mode


def test_bf16_really_computes_in_bf16(model_and_ref):
    model, x, ref = model_and_ref
    reason = skip_reason('bf16', 'cpu')
    if reason:
        pytest.skip(f'bf16 cannot run here: {reason}')
    runner = make_runner(model, 'bf16', x)
    out = output_list(runner.run())
    assert all(t.dtype == torch.bfloat16 for t in out)
    err = max_rel_err(ref, [t.float() for t in out])
    # bf16 keeps 8 bits of mantissa: the error is that of bf16, not of fp32
    assert 1e-4 < err <= TOLERANCE['bf16'], err


@pytest.mark.parametrize('arch', [f.model_name(f.smallest) for f in FAMILIES.values()
                                  if f.name != 'SHViT'])  # (SHViT: the tests above)
def test_bf16_every_family_within_tolerance(arch):
    """The other families' deploy-only fast paths (EdgeViT's folded propagate/norm/project and
    fused residuals, EfficientFormerV2's talking heads, conv+GELU) in bf16: within tolerance of
    eager fp32 at a size where stage 1 divides by EdgeViT's sample ratio (fast path) and one
    where it does not (the general path)."""
    reason = skip_reason('bf16', 'cpu')
    if reason:
        pytest.skip(f'bf16 cannot run here: {reason}')
    model = build_mmext(ARCHS[arch])
    for size in [(64, 64), (72, 56)]:
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = [t.float() for t in output_list(model(x))]
        out = [t.float() for t in output_list(make_runner(model, 'bf16', x).run())]
        assert 1e-4 < max_rel_err(ref, out) <= TOLERANCE['bf16'], (arch, size)


def test_to_bf16_is_the_one_step_cast():
    x = torch.randn(2, 3, 9, 7)
    y = runners.to_bf16(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, x.to(dtype=torch.bfloat16, memory_format=torch.channels_last))
    t = runners.to_bf16(torch.randn(2, 5))
    assert t.dtype == torch.bfloat16 and t.is_contiguous()


def test_no_native_bf16_is_refused_and_skipped(model_and_ref, monkeypatch):
    model, x, _ = model_and_ref
    monkeypatch.setattr(runners, 'native_bf16', lambda device='cpu': False)
    assert skip_reason('bf16', 'cpu').startswith('no native bf16')
    with pytest.raises(ConfigError, match='no native bf16'):
        make_runner(model, 'bf16', x)
    rows = bb.run_benchmark(archs='shvit_s1', protocols='cpu_throughput', modes=['bf16'],
                            tiny=True, compare_timm=False, reference=False, progress=False,
                            peaks=False)
    assert rows[0]['status'].startswith('skipped: no native bf16'), rows[0]['status']


def test_unknown_mode_and_missing_calibration(model_and_ref, tmp_path):
    model, x, _ = model_and_ref
    with pytest.raises(ConfigError, match="unknown mode 'fp8'"):
        make_runner(model, 'fp8', x)
    with pytest.raises(ConfigError, match='unknown mode'):
        resolve_modes(['deploy', 'fast'])
    if skip_reason('onnxruntime_int8', 'cpu'):
        pytest.skip('onnxruntime_int8 cannot run here: ' + skip_reason('onnxruntime_int8', 'cpu'))
    with pytest.raises(ConfigError, match='no .jpg/.png images'):
        make_runner(model, 'onnxruntime_int8', x, calib=dict(folder=str(tmp_path)))


def test_modes_all_is_every_supported_mode(monkeypatch):
    assert modes_for_device(None, 'cpu') == list(DEFAULT_MODES['cpu'])
    assert modes_for_device(['deploy', 'bf16'], 'cpu') == ['deploy', 'bf16']
    every = modes_for_device('all', 'cpu')
    assert every == [m for m in MODES if not skip_reason(m, 'cpu')]
    assert 'cuda_graph' not in every and 'eager' in every and 'onnxruntime' in every
    monkeypatch.setattr(runners, 'native_bf16', lambda device='cpu': False)
    assert 'bf16' not in modes_for_device('all', 'cpu')
    assert 'bf16' in modes_for_device(['bf16'], 'cpu')  # named: a skipped row says why


def _tool():
    return load_tool('benchmark_backbone')


@pytest.mark.parametrize('args, says', [
    (['--iters', '0'], 'iters must be an integer >= 1'),
    (['--batch', '-1'], 'batch must be an integer >= 1'),
    (['--threads', '0'], 'threads must be an integer >= 1'),
    (['--warmup', '-1'], 'warmup must be an integer >= 0'),
    (['--rounds', '0'], 'rounds must be an integer >= 1'),
    (['--calib-images', '0'], 'calib_images must be an integer >= 1'),
    (['--modes', 'fp8'], "unknown mode 'fp8'"),
    (['--calib-dir', '/nonexistent/images'], 'does not exist'),
])
def test_cli_bad_args_one_error_line(args, says, capsys, tmp_path):
    from mmext.errors import run_cli
    with pytest.raises(SystemExit) as exc:
        run_cli(_tool().main, args + ['--tiny', '--archs', 'shvit_s1', '--out',
                                      str(tmp_path / 'b.json')])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and says in err[0], err
    assert not (tmp_path / 'b.json').exists()


def test_run_benchmark_rejects_bad_counts():
    for kwargs in (dict(iters=0), dict(batch=-1), dict(threads=0), dict(warmup=-1),
                   dict(rounds=0)):
        with pytest.raises(ConfigError, match='must be an integer'):
            bb.run_benchmark(archs='shvit_s1', protocols='cpu_throughput', tiny=True,
                             progress=False, **kwargs)


# ---------------------------------------------------------------- bf16 at test time (precision)
class _Detector(torch.nn.Module):
    """backbone + neck + head, as an mmdet detector holds them (head stays in fp32)."""

    def __init__(self):
        super().__init__()
        self.backbone = build_mmext(ARCHS['shvit_s1'])
        self.neck = torch.nn.Conv2d(320, 16, 1)
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        feats = self.backbone(x)
        return self.head(self.neck(feats[-1]))


def test_bf16_parts_run_backbone_and_neck_in_bf16():
    from mmext.engine.precision import Bf16Parts
    if skip_reason('bf16', 'cpu'):
        pytest.skip('bf16 cannot run here: ' + skip_reason('bf16', 'cpu'))
    torch.manual_seed(0)
    det = _Detector().eval()
    x = torch.randn(1, 3, 64, 64)
    original = det.backbone
    weights = {k: v.clone() for k, v in det.state_dict().items()}
    with torch.no_grad():
        ref = det(x)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0].dtype, output.dtype)
        return hook

    with Bf16Parts(det) as ctx, torch.no_grad():
        assert ctx.parts == ['backbone', 'neck']
        first_conv = next(m for m in det.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        hooks = [first_conv.register_forward_hook(record('backbone_conv')),
                 det.head.register_forward_hook(record('head'))]
        out = det(x)
        for h in hooks:
            h.remove()
    assert seen['backbone_conv'] == (torch.bfloat16, torch.bfloat16)
    assert seen['head'] == (torch.float32, torch.float32)  # heads get float32 maps
    assert out.dtype == torch.float32
    assert 1e-4 < max_rel_err(ref, out) < 5e-2
    # put back exactly: the same float32 module, bit-identical weights
    assert det.backbone is original
    for k, v in det.state_dict().items():
        assert v.dtype == weights[k].dtype and torch.equal(v, weights[k]), k


def test_bf16_parts_errors(monkeypatch):
    from mmext.engine.precision import Bf16Parts, check_bf16
    with pytest.raises(ConfigError, match='none of the parts'):
        Bf16Parts(torch.nn.Linear(2, 2))
    monkeypatch.setattr(runners, 'native_bf16', lambda device='cpu': False)
    import mmext.engine.precision as precision
    monkeypatch.setattr(precision, 'native_bf16', lambda device='cpu': False)
    with pytest.raises(ConfigError, match='native bf16'):
        check_bf16('cpu')
    with pytest.raises(ConfigError, match='native bf16'):
        with Bf16Parts(_Detector()):
            pass


# ------------------------------------------------------------------------- fast_ops stand-ins
@pytest.mark.parametrize('c, r, h, w', [(8, 2, 5, 7), (6, 4, 3, 3)])
def test_window_spread_equals_depthwise_deconv(c, r, h, w):
    from mmext.deploy.fast_ops import WindowSpread
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(c, c, r, stride=r, groups=c).eval()
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        torch.testing.assert_close(WindowSpread(deconv)(x), deconv(x), rtol=1e-6, atol=1e-6)


def test_deploy_runner_swaps_edgevit_deconvs():
    from mmext.deploy.fast_ops import WindowSpread, swap_slow_layers
    model = build_mmext(ARCHS['edgevit_xxs'])
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = output_list(model(x))
    deconvs = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    assert deconvs > 0
    fused = build_mmext(ARCHS['edgevit_xxs'])
    fused.load_state_dict(model.state_dict())
    assert swap_slow_layers(fused) == deconvs
    assert sum(isinstance(m, WindowSpread) for m in fused.modules()) == deconvs
    runner = make_runner(model, 'deploy', x)
    assert max_rel_err(ref, runner.run()) < 1e-5
    # a non-depthwise or overlapping transposed conv is left alone
    keep = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 4, 3, stride=2, groups=4),
                               torch.nn.ConvTranspose2d(4, 8, 2, stride=2))
    assert swap_slow_layers(keep) == 0


@pytest.mark.slow
def test_fp32_then_bf16_test_loop(tmp_path, coco_demo):
    """A real mmengine test loop (tiny RetinaNet + SHViT-S1 on the demo COCO set), run in fp32
    and then with backbone and neck in bf16: both give metrics, the bf16 parts were used and
    timed, and the model is float32 again afterwards."""
    from mmext.engine.config import detect_codebase, load_config, register_codebase
    from mmext.engine.launch import adapt_to_device, build_runner
    from mmext.engine.precision import Bf16Module, test_fp32_then_bf16
    from tests.runtime_helpers import tiny_retinanet_config
    if skip_reason('bf16', 'cpu'):
        pytest.skip('bf16 cannot run here: ' + skip_reason('bf16', 'cpu'))
    cfg_file = tiny_retinanet_config(tmp_path / 'retina.py', coco_demo, max_epochs=1,
                                     random_aug=False)
    cfg = load_config(cfg_file)
    register_codebase(detect_codebase(cfg))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.model.backbone.init_cfg = None
    adapt_to_device(cfg)
    runner = build_runner(cfg)
    used = []
    orig_forward = Bf16Module.forward

    def spy(self, *args, **kwargs):  # records that the bf16 copy really ran
        used.append(next(self.module.parameters()).dtype)
        return orig_forward(self, *args, **kwargs)

    Bf16Module.forward = spy
    try:
        result = test_fp32_then_bf16(runner)
    finally:
        Bf16Module.forward = orig_forward
    assert set(result['fp32']) == set(result['bf16']) and 'coco/bbox_mAP' in result['fp32']
    assert used and set(used) == {torch.bfloat16}
    assert len(used) == 2 * coco_demo['num_val']  # backbone and neck, once per image
    assert result['parts_fp32_s'] > 0 and result['parts_bf16_s'] > 0 and result['speedup'] > 0
    model = runner.model
    assert not any(isinstance(m, Bf16Module) for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_test_bf16_refused_without_native_bf16(monkeypatch, tmp_path):
    import mmext.engine.precision as precision
    from mmext.apis.evaluation import test as run_test
    monkeypatch.setattr(precision, 'native_bf16', lambda device='cpu': False)
    # refused before the config is even read (the paths do not exist)
    with pytest.raises(ConfigError, match='--bf16 needs native bf16'):
        run_test(str(tmp_path / 'missing.py'), str(tmp_path / 'missing.pth'), bf16=True)
