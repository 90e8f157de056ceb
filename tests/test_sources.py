"""Checkpoints by URL: download once into the cache, hash check, fast failures, offline folder.

Everything runs against a real HTTP server on 127.0.0.1 in a thread (no internet needed).
"""
import hashlib
import io
import os
import subprocess
import sys
import time

import pytest
import torch

import mmext  # noqa: F401
from mmext.checkpoints import init_pretrained, load_pretrained
from mmext.checkpoints.sources import cache_name, expected_sha256
from mmext.checkpoints.zoo import ZOO
from mmext.errors import CheckpointError
from mmext.models import EfficientFormer, EfficientFormerV2, SHViT
from tests.helpers import randomize_norms
from tests.weights_helpers import (FileServer, SilentServer, closed_port_url,
                                   efficientformer_to_mmpretrain, real_keys, shvit_to_official,
                                   timm_v2_file)

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools',
                    'download_weights.py')


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private download cache; no offline folder; the default timeout."""
    folder = tmp_path / 'cache'
    monkeypatch.setenv('MMEXT_CACHE_DIR', str(folder))
    monkeypatch.delenv('MMEXT_WEIGHTS_DIR', raising=False)
    monkeypatch.delenv('MMEXT_DOWNLOAD_TIMEOUT', raising=False)
    return folder


def _bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _features(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _same(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


@pytest.fixture(scope='module')
def shvit():
    torch.manual_seed(0)
    model = randomize_norms(SHViT('s1')).eval()
    x = torch.randn(1, 3, 64, 96)
    return model, x, _features(model, x)


def _files_in(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_cache_names_and_known_hashes():
    assert cache_name(ZOO['shvit_s4'].url) == 'shvit_s4.pth'
    assert cache_name(ZOO['efficientformerv2_l'].url) == \
        'efficientformerv2_l.snap_dist_in1k_model.safetensors'
    assert len({cache_name(w.url) for w in ZOO.values()}) == len(ZOO)
    assert expected_sha256(ZOO['efficientformer_l1'].url) == 'cc3e1ac6'
    assert expected_sha256(ZOO['shvit_s1'].url) is None


def test_url_downloads_once_and_matches_the_local_file(shvit, cache, tmp_path):
    model, x, ref = shvit
    body = _bytes({'model': shvit_to_official(model.state_dict()), 'epoch': 299})
    local = tmp_path / 'shvit_s1.pth'
    local.write_bytes(body)
    with FileServer({'/releases/v1.0/shvit_s1.pth': body}) as server:
        url = server.url('/releases/v1.0/shvit_s1.pth')
        for _ in range(2):
            fresh = SHViT('s1', init_cfg=dict(type='Pretrained', checkpoint=url))
            fresh.init_weights()
            _same(ref, _features(fresh, x))
        assert server.requests['/releases/v1.0/shvit_s1.pth'] == 1  # the second build: no request
    assert _files_in(cache) == ['shvit_s1.pth']  # no temporary file left behind
    from_local = SHViT('s1')
    load_pretrained(from_local, str(local))
    _same(_features(from_local, x), ref)


def test_timm_safetensors_from_the_hub_layout(cache):
    from safetensors.torch import save
    model = randomize_norms(EfficientFormerV2('s0'), seed=1).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = _features(model, x)
    real = real_keys('efficientformer_v2_timm', 's0')
    body = save(timm_v2_file(model.state_dict(), real))
    path = '/timm/efficientformerv2_s0.snap_dist_in1k/resolve/main/model.safetensors'
    with FileServer({path: body}) as server:
        fresh = EfficientFormerV2('s0')
        report = init_pretrained(fresh, [dict(type='Pretrained', checkpoint=server.url(path))])
    assert report.layout == 'mmext/timm' and report.missing == [] and report.unexpected == []
    _same(ref, _features(fresh, x))
    assert _files_in(cache) == ['efficientformerv2_s0.snap_dist_in1k_model.safetensors']


@pytest.fixture(scope='module')
def mmpretrain_l1():
    model = randomize_norms(EfficientFormer('l1'), seed=2).eval()
    for name, p in model.named_parameters():  # layer scales and biases away from their init
        if name.endswith(('gamma', 'attention_biases')):
            torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 3, 64, 64)
    ckpt = {'state_dict': efficientformer_to_mmpretrain(model.state_dict(), 448),
            'meta': {'epoch': 300}}
    return model, x, _features(model, x), ckpt


def test_mmpretrain_file_with_hash_in_its_name(mmpretrain_l1, cache):
    model, x, ref, ckpt = mmpretrain_l1
    real = real_keys('efficientformer_mmpretrain', 'l1')
    written = {k: tuple(v.shape) for k, v in ckpt['state_dict'].items()}
    assert written == real  # the inverse map writes mmpretrain's real names and shapes
    body = _bytes(ckpt)
    digest = hashlib.sha256(body).hexdigest()
    path = f'/mmcls/efficientformer-l1_3rdparty_in1k_20220915-{digest[:8]}.pth'
    with FileServer({path: body}) as server:
        fresh = EfficientFormer('l1')
        report = load_pretrained(fresh, server.url(path))
    assert report.layout == 'mmpretrain' and report.missing == [] and report.unexpected == []
    _same(ref, _features(fresh, x))


def test_corrupted_download_fails_the_hash_check_and_is_deleted(mmpretrain_l1, cache):
    body = _bytes(mmpretrain_l1[3])
    digest = hashlib.sha256(body).hexdigest()
    path = f'/mmcls/efficientformer-l1_3rdparty_in1k_20220915-{digest[:8]}.pth'
    corrupted = body[:-100] + bytes(100)
    with FileServer({path: corrupted}) as server:
        with pytest.raises(CheckpointError, match='hash check') as info:
            load_pretrained(EfficientFormer('l1'), server.url(path))
    assert 'deleted' in str(info.value) and digest[:8] in str(info.value)
    assert _files_in(cache) == []


def _assert_clear_download_error(exc, url, cache):
    message = str(exc.value)
    assert url in message and str(cache) in message and 'place it' in message


def test_unreachable_url_fails_fast(cache):
    url = closed_port_url()
    start = time.monotonic()
    with pytest.raises(CheckpointError, match='Could not download') as info:
        load_pretrained(SHViT('s1'), url)
    assert time.monotonic() - start < 5
    _assert_clear_download_error(info, url, cache)
    assert _files_in(cache) == []


def test_server_that_never_answers_times_out(cache, monkeypatch):
    monkeypatch.setenv('MMEXT_DOWNLOAD_TIMEOUT', '1')
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(CheckpointError, match='timeout 1 s') as info:
            load_pretrained(SHViT('s1'), server.url)
        assert time.monotonic() - start < 6
    _assert_clear_download_error(info, server.url, cache)
    assert _files_in(cache) == []


def test_bad_timeout_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv('MMEXT_DOWNLOAD_TIMEOUT', 'soon')
    with pytest.raises(CheckpointError, match='MMEXT_DOWNLOAD_TIMEOUT'):
        load_pretrained(SHViT('s1'), closed_port_url())


def test_weights_dir_serves_urls_without_any_request(shvit, tmp_path, monkeypatch):
    model, x, ref = shvit
    folder = tmp_path / 'offline'
    folder.mkdir()
    monkeypatch.setenv('MMEXT_WEIGHTS_DIR', str(folder))
    monkeypatch.setenv('MMEXT_DOWNLOAD_TIMEOUT', '1')
    # the original file under its URL's file name (nothing listens at the URL)
    url = closed_port_url()
    (folder / 'shvit_s1.pth').write_bytes(_bytes({'model': shvit_to_official(model.state_dict())}))
    fresh = SHViT('s1', init_cfg=dict(type='Pretrained', checkpoint=url))
    fresh.init_weights()
    _same(ref, _features(fresh, x))
    # the canonical zoo URL: a converted <model>.pth as tools/download_weights.py writes it
    (folder / 'shvit_s1.pth').unlink()
    torch.save({'state_dict': model.state_dict()}, folder / 'shvit_s1.pth')
    fresh = SHViT('s1', init_cfg=dict(type='Pretrained', checkpoint=ZOO['shvit_s1'].url))
    fresh.init_weights()
    _same(ref, _features(fresh, x))
    # a file the folder lacks: one error that names the folder, no download attempted
    with pytest.raises(CheckpointError, match='MMEXT_WEIGHTS_DIR is set but holds none of'):
        load_pretrained(SHViT('s2'), ZOO['shvit_s2'].url)


def test_weights_dir_file_with_a_wrong_hash_is_refused_and_kept(mmpretrain_l1, tmp_path,
                                                                monkeypatch):
    body = _bytes(mmpretrain_l1[3])
    name = 'efficientformer-l1_3rdparty_in1k_20220915-00000000.pth'  # not this file's hash
    folder = tmp_path / 'offline'
    folder.mkdir()
    (folder / name).write_bytes(body)
    monkeypatch.setenv('MMEXT_WEIGHTS_DIR', str(folder))
    with pytest.raises(CheckpointError, match='failed the hash check') as info:
        load_pretrained(EfficientFormer('l1'), f'{closed_port_url()[:-len("shvit_s1.pth")]}{name}')
    assert 'left in place' in str(info.value)
    assert (folder / name).read_bytes() == body  # a user's file is never deleted


def test_non_http_url_is_refused():
    with pytest.raises(CheckpointError, match='http:// and https:// URLs only'):
        load_pretrained(SHViT('s1'), 's3://bucket/shvit_s1.pth')


@pytest.mark.slow  # subprocesses that import mmdet/mmseg
def test_download_weights_tool_end_to_end(shvit, tmp_path, cache):
    model, x, ref = shvit
    body = _bytes({'model': shvit_to_official(model.state_dict())})
    out = tmp_path / 'weights'
    env = dict(os.environ, MMEXT_CACHE_DIR=str(cache))
    with FileServer({'/mirror/shvit_s1.pth': body}) as server:
        proc = subprocess.run([sys.executable, TOOL, 'shvit_s1', '--out', str(out),
                               '--mirror', server.url('/mirror/')],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert 'official layout' in proc.stdout
        again = subprocess.run([sys.executable, TOOL, 'shvit_s1', '--out', str(out),
                                '--mirror', server.url('/mirror/')],
                               capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert again.returncode == 0, again.stderr
        assert server.requests['/mirror/shvit_s1.pth'] == 1  # the second run used the cache
    saved = torch.load(out / 'shvit_s1.pth', weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    fresh = SHViT('s1')
    assert load_pretrained(fresh, str(out / 'shvit_s1.pth')).layout == 'mmext'
    _same(ref, _features(fresh, x))
    bad = subprocess.run([sys.executable, TOOL, 'edgevit_xxs', 'nonsense', '--out', str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 2
    assert 'no released ImageNet weights' in bad.stderr and "Unknown model 'nonsense'" in bad.stderr
    assert 'Traceback' not in bad.stderr
