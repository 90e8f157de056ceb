"""Session fixtures: the generated demo data sets (made once per test session)."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile
import warnings

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

# Tiny sets: enough images for a couple of iterations and a meaningful evaluation call.
COCO_TINY = dict(num_train=4, num_val=2, img_size=128, seed=0)
ADE_TINY = dict(num_train=4, num_val=2, img_size=128, seed=0)


def pytest_collection_modifyitems(config, items):
    """Files holding slow (end-to-end) tests first, otherwise the order as collected: with the
    two workers of pytest.ini (whole files each, in this order) the long files start early and
    the short ones fill in at the end."""
    slow_files = {item.nodeid.split('::')[0] for item in items if item.get_closest_marker('slow')}
    items.sort(key=lambda item: item.nodeid.split('::')[0] not in slow_files)


@pytest.fixture(autouse=True, scope='session')
def one_thread():
    """The whole session runs torch on one intra-op thread (set before any fixture computes a
    reference, so references and tests agree bit for bit): on a shared 2-core machine more
    threads only spin against each other, and timings in benchmark tests stay comparable.
    Subprocesses set their own."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope='session')
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope='session')
def coco_demo(tmp_path_factory):
    """A tiny COCO-format shapes set (``mmext.demo.coco_demo_info`` dict)."""
    from mmext.demo import make_coco_demo
    root = tmp_path_factory.mktemp('coco_demo')
    info = make_coco_demo(root, **COCO_TINY)
    info.update(COCO_TINY)
    return info


@pytest.fixture(scope='session')
def ade_demo(tmp_path_factory):
    """A tiny ADE20K-format shapes set (``mmext.demo.ade_demo_info`` dict)."""
    from mmext.demo import make_ade_demo
    root = tmp_path_factory.mktemp('ade_demo')
    info = make_ade_demo(root, **ADE_TINY)
    info.update(ADE_TINY)
    return info


@pytest.fixture(scope='session')
def subprocess_env():
    """Environment for the tools run as subprocesses: repo on PYTHONPATH, quiet warnings,
    one thread per process (several processes share the few cores)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHONWARNINGS'] = 'ignore'
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHON'] = sys.executable
    return env


# ----------------------------------------------------------------------------- the wheel
def _copy_checkout(dst):
    """The working tree as a fresh clone would have it (no venv, builds, outputs or .mim)."""
    ignore_top = {'.git', 'build', 'dist', 'work_dirs', 'data', 'checkpoints', 'outputs'}

    def ignore(folder, names):
        skip = {n for n in names if n in ('__pycache__', '.mim') or n.endswith(
            ('.pyc', '.egg-info', '.pth', '.onnx'))}
        if osp.abspath(folder) == REPO_ROOT:
            skip |= (ignore_top & set(names)) | {n for n in names if n.startswith('.venv')}
        return skip

    shutil.copytree(REPO_ROOT, dst, ignore=ignore)
    return dst


@pytest.fixture(scope='session')
def built_wheel(tmp_path_factory):
    """``pip wheel . --no-deps --no-build-isolation`` of a copy of the checkout, and its unzip."""
    base = tmp_path_factory.mktemp('wheel')
    src = _copy_checkout(str(base / 'src'))
    out = base / 'out'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '.', '--no-deps',
                           '--no-build-isolation', '-q', '-w', str(out)], cwd=src,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob('mmext-*.whl'))
    assert len(wheels) == 1, wheels
    site = base / 'site'
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
        metadata = next(zf.read(n).decode() for n in names if n.endswith('.dist-info/METADATA'))
    assert not osp.exists(osp.join(src, 'mmext', '.mim')), 'the build wrote into the source tree'
    return dict(names=names, site=str(site), metadata=metadata, wheel=str(wheels[0]))
