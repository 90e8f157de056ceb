"""Installing mmext into an existing OpenMMLab environment changes nothing that is there.

The stack mmdet 3.3 users have (torch 2.0/2.1 + OpenMMLab's prebuilt mmcv 2.1.0, numpy 1.x) must
take mmext's wheel as it is: pip's resolver, asked for a dry run against the running environment
(``make test TORCH=2.1.2`` runs this in exactly that stack), installs nothing but mmext.
"""
import json
import re
import subprocess
import sys

import pytest

#: never upgraded, downgraded or replaced by installing mmext
UNTOUCHABLE = ('torch', 'mmcv', 'mmdet', 'mmsegmentation', 'mmengine', 'numpy')

#: the environment of mmdet 3.3's get-started page that mmext's requirements must accept
MMDET33_STACK = {'torch': '2.0.1', 'mmcv': '2.1.0', 'mmdet': '3.3.0', 'mmsegmentation': '1.2.2',
                 'mmengine': '0.10.3', 'numpy': '1.24.4'}


def _requires(metadata):
    from packaging.requirements import Requirement
    reqs = [Requirement(r) for r in re.findall(r'^Requires-Dist: (.+)$', metadata, re.M)]
    return [r for r in reqs if r.marker is None or 'extra' not in str(r.marker)], reqs


@pytest.mark.slow
def test_requirements_accept_the_mmdet33_stack(built_wheel):
    """Every requirement (extras too) holds for torch 2.0 / mmcv 2.1 / numpy 1.24 and Python 3.8."""
    from packaging.specifiers import SpecifierSet
    core, every = _requires(built_wheel['metadata'])
    assert {r.name for r in core} == {'torch', 'mmengine', 'numpy', 'safetensors'}
    for req in every:
        if req.name in MMDET33_STACK:
            assert req.specifier.contains(MMDET33_STACK[req.name], prereleases=True), \
                f'{req} would replace {req.name} {MMDET33_STACK[req.name]}'
    python = re.search(r'^Requires-Python: (.+)$', built_wheel['metadata'], re.M).group(1)
    assert SpecifierSet(python).contains('3.8.10'), python


@pytest.mark.slow
def test_pip_dry_run_changes_no_installed_package(built_wheel, tmp_path):
    """``pip install --dry-run --report`` of the wheel and its extras into this environment."""
    report = tmp_path / 'report.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--quiet',
         '--report', str(report), f'{built_wheel["wheel"]}[det,seg,deploy]'],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        'pip could not install the wheel without fetching or replacing packages:\n'
        + proc.stdout[-2000:] + proc.stderr[-2000:])
    planned = {item['metadata']['name'].lower(): item['metadata']['version']
               for item in json.loads(report.read_text())['install']}
    assert set(planned) <= {'mmext'}, f'installing mmext would also install/replace {planned}'
