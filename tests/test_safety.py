"""No file lost, every error one line: the tools and mmext.apis as a careless or hostile user
drives them (issue #19, item 8).

Real files in tmp_path, real HTTP servers on 127.0.0.1, the tools run in-process through
run_cli (as their command lines run them). A file-size limit (RLIMIT_FSIZE) stands for a full
disk. Read-only folders: chmod, and for root (which writes through chmod) the immutable
attribute; tests needing one skip where neither works (tests/safety_helpers.py).
"""
import http.server
import io
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

import mmext  # noqa: F401
from mmext.checkpoints import load_pretrained
from mmext.checkpoints.download import prepare_weights
from mmext.errors import CheckpointError, run_cli
from mmext.models import SHViT
from tests.helpers import load_tool
from tests.safety_helpers import (file_size_limit, files_in, one_line_error,  # noqa: F401
                                  readonly_dir, umask_022)
from tests.weights_helpers import FileServer, shvit_to_official

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def shvit_s1_file(tmp_path_factory):
    """A real SHViT-S1 checkpoint in the authors' layout."""
    path = tmp_path_factory.mktemp('weights') / 'shvit_s1_official.pth'
    path.write_bytes(_bytes({'model': shvit_to_official(SHViT('s1').state_dict())}))
    return path


# ------------------------------------------------------------------- convert_checkpoint.py
def test_convert_never_writes_over_a_file_or_its_input(shvit_s1_file, tmp_path, capsys,
                                                       umask_022):
    notes = tmp_path / 'notes.txt'
    notes.write_text('my notes')
    src = tmp_path / 'src.pth'
    shutil.copy(shvit_s1_file, src)
    source = src.read_bytes()
    base = ['--model', 'SHViT', '--arch', 's1']
    err = one_line_error(capsys, 'convert_checkpoint', [str(src), str(notes)] + base)
    assert 'already exists' in err and '--force' in err
    assert notes.read_text() == 'my notes'
    for argv in ([str(src), str(src)], [str(src), str(src), '--force']):
        err = one_line_error(capsys, 'convert_checkpoint', argv + base)
        assert 'is the input' in err
    (tmp_path / 'alias.pth').symlink_to(src)
    err = one_line_error(capsys, 'convert_checkpoint',
                         [str(src), str(tmp_path / 'alias.pth'), '--force'] + base)
    assert 'is the input' in err
    assert src.read_bytes() == source
    err = one_line_error(capsys, 'convert_checkpoint', [str(src), str(tmp_path)] + base)
    assert 'is a folder' in err
    err = one_line_error(capsys, 'convert_checkpoint', [str(src), str(notes / 'x.pth')] + base)
    assert 'is a file, not a folder' in err

    run_cli(load_tool('convert_checkpoint').main, [str(src), str(notes), '--force'] + base)
    assert load_pretrained(SHViT('s1'), str(notes)).layout == 'mmext'
    assert oct(os.stat(notes).st_mode & 0o777) == oct(0o644)  # not mkstemp's 0600
    assert files_in(tmp_path) == ['alias.pth', 'notes.txt', 'src.pth']  # no temporary file left


def test_convert_into_a_read_only_folder(shvit_s1_file, readonly_dir, capsys):
    err = one_line_error(capsys, 'convert_checkpoint', [str(shvit_s1_file),
                         str(readonly_dir / 'out.pth'), '--model', 'SHViT'])
    assert str(readonly_dir) in err and 'choose another path' in err
    assert files_in(readonly_dir) == []


def test_convert_on_a_full_disk_leaves_no_partial_file(shvit_s1_file, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old.pth').write_bytes(b'old contents')
    for dst, extra in (('new.pth', []), ('old.pth', ['--force'])):
        with file_size_limit(1 << 20):  # the converted SHViT-S1 is ~25 MB
            err = one_line_error(capsys, 'convert_checkpoint', [
                str(shvit_s1_file), str(out / dst), '--model', 'SHViT'] + extra)
        assert str(out / dst) in err and 'File too large' in err and 'free space' in err
    assert files_in(out) == ['old.pth']  # no partial new.pth, no temporary file
    assert (out / 'old.pth').read_bytes() == b'old contents'


def test_an_onnx_export_gets_normal_permissions(tmp_path, capsys, umask_022):
    pytest.importorskip('onnxruntime')
    out = tmp_path / 'shvit_s1.onnx'
    run_cli(load_tool('export_onnx').main, ['SHViT', 's1', str(out), '--sizes', '64'])
    assert files_in(tmp_path) == ['shvit_s1.onnx']
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o644)  # not its temporary file's 0600


@pytest.mark.parametrize('content, says', [
    (b'hello world\n', "a text file (its first line: 'hello world')"),
    (b'<!DOCTYPE html><html><body>404</body></html>', 'an HTML page'),
    (b'', 'an empty file'),
    (b'{"error": "not found"}', 'JSON text'),
])
def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path, content, says):
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(SHViT('s1'), str(path))
    assert f'it is {says}, not a checkpoint' in str(info.value)


# -------------------------------------------------------------------------------- downloads
@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / 'cache'
    monkeypatch.setenv('MMEXT_CACHE_DIR', str(folder))
    for name in ('MMEXT_WEIGHTS_DIR', 'MMEXT_DOWNLOAD_TIMEOUT', 'MMEXT_DOWNLOAD_DEADLINE'):
        monkeypatch.delenv(name, raising=False)
    return folder


class TrickleServer:
    """Announces a 1 MB file, then sends one byte every 50 ms: never silent long enough for a
    read timeout, and not done for hours (it hangs up after 15 s, so that a download without a
    deadline fails the test instead of hanging it)."""

    def __init__(self):
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header('Content-Length', str(1 << 20))
                self.end_headers()
                end = time.monotonic() + 15
                try:
                    while not server.stop.wait(0.05) and time.monotonic() < end:
                        self.wfile.write(b'\x80')
                        self.wfile.flush()
                except OSError:  # the client hung up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/weights/shvit_s1.pth'

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_trickling_download_stops_at_its_deadline(cache, monkeypatch):
    monkeypatch.setenv('MMEXT_DOWNLOAD_DEADLINE', '1.5')
    with TrickleServer() as server:
        start = time.monotonic()
        with pytest.raises(CheckpointError) as info:
            load_pretrained(SHViT('s1'), server.url)
        took = time.monotonic() - start
    assert took < 5, took  # the read timeout (10 s) alone would never end it
    message = str(info.value)
    assert 'did not finish within its deadline of 1.5 s' in message
    assert 'MMEXT_DOWNLOAD_DEADLINE' in message and 'bytes had arrived' in message
    assert files_in(cache) == []
    monkeypatch.setenv('MMEXT_DOWNLOAD_DEADLINE', 'never')
    with pytest.raises(CheckpointError, match="MMEXT_DOWNLOAD_DEADLINE='never' is not a"):
        load_pretrained(SHViT('s1'), server.url)


class HangUpServer(TrickleServer):
    """Announces 1000 bytes, sends the first 500 of a checkpoint, closes the connection."""

    def __init__(self):
        super().__init__()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header('Content-Length', '1000')
                self.end_headers()
                self.wfile.write(b'PK\x03\x04' + bytes(496))
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd.RequestHandlerClass = Handler


def test_a_download_cut_short_is_never_cached(cache):
    with HangUpServer() as server:
        with pytest.raises(CheckpointError) as info:
            load_pretrained(SHViT('s1'), server.url)
    assert 'stopped after 500 of 1000 bytes (the connection closed)' in str(info.value)
    assert files_in(cache) == []


def test_an_html_page_is_named_and_never_cached(shvit_s1_file, cache, umask_022):
    page = b'<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>'
    with FileServer({'/weights/shvit_s1.pth': page}) as server:
        with pytest.raises(CheckpointError) as info:
            load_pretrained(SHViT('s1'), server.url('/weights/shvit_s1.pth'))
        assert 'returned an HTML page, not a checkpoint' in str(info.value)
        assert files_in(cache) == []
        server.files['/weights/shvit_s1.pth'] = shvit_s1_file.read_bytes()  # the real file
        assert load_pretrained(SHViT('s1'), server.url('/weights/shvit_s1.pth')).missing == []
    assert files_in(cache) == ['shvit_s1.pth']
    assert oct(os.stat(cache / 'shvit_s1.pth').st_mode & 0o777) == oct(0o644)


def test_a_mirror_file_of_another_arch_is_never_cached(cache, tmp_path, capsys):
    other = _bytes({'model': shvit_to_official(SHViT('s2').state_dict())})
    out = tmp_path / 'weights'
    with FileServer({'/mirror/shvit_s1.pth': other}) as server:
        with pytest.raises(CheckpointError) as info:
            prepare_weights('shvit_s1', str(out), mirror=server.url('/mirror/'))
        message = str(info.value)
        assert 'is not the checkpoint wanted' in message and 'does not fit' in message
        assert server.url('/mirror/shvit_s1.pth') in message
        assert files_in(cache) == [] and files_in(out) == []
        server.files['/mirror/shvit_s1.pth'] = _bytes(
            {'model': shvit_to_official(SHViT('s1').state_dict())})
        argv = ['shvit_s1', '--out', str(out), '--mirror', server.url('/mirror/')]
        run_cli(load_tool('download_weights').main, argv)
        assert 'official layout' in capsys.readouterr().out
        written = (out / 'shvit_s1.pth').read_bytes()
        run_cli(load_tool('download_weights').main, argv)  # an existing output is kept
        assert 'exists; kept' in capsys.readouterr().out
        assert (out / 'shvit_s1.pth').read_bytes() == written
        assert server.requests['/mirror/shvit_s1.pth'] == 2  # the refused file and the good one
    assert files_in(cache) == ['shvit_s1.pth']


def test_unwritable_cache_and_out_folders_are_one_line(cache, readonly_dir, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.setenv('MMEXT_CACHE_DIR', str(readonly_dir / 'cache'))
    with FileServer({}) as server:
        with pytest.raises(CheckpointError, match='Cannot write into the weights cache'):
            load_pretrained(SHViT('s1'), server.url('/weights/shvit_s1.pth'))
        err = one_line_error(capsys, 'download_weights', ['shvit_s1', '--out',
                             str(readonly_dir / 'out'), '--mirror', server.url('/')])
        assert str(readonly_dir / 'out') in err
        assert server.requests == {}  # refused before any download


def test_exported_backbone_file_gets_normal_permissions(tmp_path):
    import os

    from mmext.deploy import export_backbone
    old = os.umask(0o022)
    try:
        info = export_backbone('SHViT', 's1', str(tmp_path / 'shvit.onnx'), sizes=[(64, 64)])
    finally:
        os.umask(old)
    assert oct(os.stat(info['path']).st_mode & 0o777) == oct(0o644)


def test_a_config_of_another_type_is_one_config_error(tmp_path):
    from mmext.engine.config import load_config
    from mmext.errors import ConfigError
    path = tmp_path / 'model.txt'
    path.write_text('model = dict()\n')
    with pytest.raises(ConfigError, match="is not a config file: mmengine reads .py"):
        load_config(str(path))
