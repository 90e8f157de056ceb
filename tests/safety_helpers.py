"""Shared by tests/test_safety*.py: the one-error-line check, read-only folders, a file-size
limit standing for a full disk."""
import contextlib
import os
import os.path as osp
import resource
import shutil
import subprocess

import pytest

from mmext.errors import run_cli
from tests.helpers import load_tool


def one_line_error(capsys, tool, argv):
    """Run ``tools/<tool>.py argv`` as its command line does; its one ``error:`` line."""
    with pytest.raises(SystemExit) as exc:
        run_cli(load_tool(tool).main, argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'Traceback' not in captured.err, captured.err[-3000:]
    return errors[0]


def files_in(folder):
    """Every name in ``folder`` (hidden temporary files included), sorted."""
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can create files in (chmod 555; for root also ``chattr +i``)."""
    folder = tmp_path / 'readonly'
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which('chattr') and subprocess.run(
        ['chattr', '+i', str(folder)], capture_output=True).returncode == 0
    try:
        (folder / 'probe').write_bytes(b'')
    except OSError:
        pass
    else:
        (folder / 'probe').unlink()
        pytest.skip('no way to make a read-only folder here (root without chattr)')
    yield folder
    if immutable:
        subprocess.run(['chattr', '-i', str(folder)], check=True)
    folder.chmod(0o755)


@contextlib.contextmanager
def file_size_limit(limit):
    """Writes past ``limit`` bytes fail (EFBIG), as on a full disk, in this process (Python
    ignores SIGXFSZ, so the write raises instead of killing the process)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
