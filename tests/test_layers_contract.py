"""The layering in .importlinter (a package imports only those below it; families and checkpoint
layouts independent), checked by import-linter on the source, lazy imports included."""
import os.path as osp
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT


def lint_imports(root):
    exe = osp.join(osp.dirname(sys.executable), 'lint-imports')
    if not osp.exists(exe):
        pytest.fail('import-linter is not installed: pip install -r requirements/tests.txt')
    return subprocess.run([exe, '.importlinter', '--no-cache'], cwd=root, capture_output=True,
                          text=True, timeout=300, env={'PYTHONPATH': root, 'PATH': '/usr/bin:/bin'})


def test_import_contracts_are_kept():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert 'Contracts: 3 kept, 0 broken' in proc.stdout


def test_a_lazy_upward_import_breaks_the_contract(tmp_path):
    import shutil
    shutil.copytree(osp.join(REPO_ROOT, 'mmext'), tmp_path / 'mmext',
                    ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    shutil.copy(osp.join(REPO_ROOT, '.importlinter'), tmp_path)
    with open(tmp_path / 'mmext' / 'models' / 'necks.py', 'a') as f:
        f.write('\n\ndef _planted():\n    from mmext.benchmark import report  # noqa\n')
    proc = lint_imports(str(tmp_path))
    assert proc.returncode != 0 and 'mmext.models.necks -> mmext.benchmark' in proc.stdout, \
        proc.stdout[-2000:]


def test_the_family_manifest_is_what_the_contracts_and_imports_list():
    """Each family of mmext.models.families has its model module and its layout module in the
    independence contracts, and mmext/checkpoints/__init__.py imports its layout module (the
    one list a new family must join outside its own files and manifest entry)."""
    import ast
    import configparser

    from mmext.models.families import FAMILIES
    config = configparser.ConfigParser()
    config.read(osp.join(REPO_ROOT, '.importlinter'))
    listed = {name: config[f'importlinter:contract:{name}']['modules'].split()
              for name in ('families', 'layouts')}
    assert sorted(listed['families']) == sorted(f.module for f in FAMILIES.values()), \
        'list every family module of the manifest under [importlinter:contract:families]'
    assert sorted(listed['layouts']) == sorted(f.layouts_module for f in FAMILIES.values()), \
        'list every layout module of the manifest under [importlinter:contract:layouts]'
    with open(osp.join(REPO_ROOT, 'mmext', 'checkpoints', '__init__.py')) as f:
        tree = ast.parse(f.read())
    imported = {f'{node.module}.{alias.name}' for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    missing = [f.layouts_module for f in FAMILIES.values() if f.layouts_module not in imported]
    assert not missing, f'mmext/checkpoints/__init__.py does not import {missing}'
