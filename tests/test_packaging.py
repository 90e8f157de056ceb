"""Packaging: the wheel carries the configs (mmext/.mim), ``mmext::`` inheritance from a checkout and
from an installed wheel, the OpenMMLab metafiles and model index, and the Slurm scripts."""
import ast
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
import yaml

from mmext.errors import ConfigError
from mmext.models.families import FAMILIES, arch_entries, family_by_prefix

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
USER_BASE = 'mmext::mask_rcnn/shvit_s4_fpn_1x_coco.py'
# The canonical ImageNet weights of each backbone (EdgeViT: none released): the family manifest's.
CANONICAL_WEIGHTS = {f.model_name(a): spec.weights for f, a, spec in arch_entries() if spec.weights}
NO_WEIGHTS = tuple(f.model_name(a) for f, a, spec in arch_entries() if not spec.weights)
# metafile folder -> (config suffix, task name in PAPER_RESULTS)
METAFILE_FOLDERS = dict(mask_rcnn=('_fpn_1x_coco.py', 'Mask R-CNN'),
                        retinanet=('_fpn_1x_coco.py', 'RetinaNet'),
                        semfpn=('_fpn_40k_ade20k.py', 'Semantic FPN'))
METRIC_NAMES = {'box AP': 'bbox_mAP', 'mask AP': 'segm_mAP', 'mIoU': 'mIoU'}


def _write_user_config(folder, base=USER_BASE, extra=''):
    path = osp.join(str(folder), 'user_cfg.py')
    with open(path, 'w') as f:
        f.write(f'{extra}_base_ = {base!r}\nmodel = dict(backbone=dict(init_cfg=None))\n')
    return path


def _run_python(code, cwd, env_extra=None, drop_pythonpath=True):
    env = dict(os.environ)
    if drop_pythonpath:
        env.pop('PYTHONPATH', None)
    env['PYTHONWARNINGS'] = 'ignore'
    env.update(env_extra or {})
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=300)


def _last_json(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- resources
def test_mim_contents_are_the_same_in_setup_and_resources():
    from mmext import resources
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    values = [ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') ==
              'MIM_CONTENTS']
    assert values == [resources.MIM_CONTENTS]


def test_config_path_finds_checkout_configs():
    from mmext.resources import config_path, config_root, list_configs, model_index_path
    expected = osp.join(REPO, 'configs', 'mask_rcnn', 'shvit_s4_fpn_1x_coco.py')
    assert config_root() == osp.join(REPO, 'configs')
    assert model_index_path() == osp.join(REPO, 'model-index.yml')
    for name in ('mask_rcnn/shvit_s4_fpn_1x_coco.py', USER_BASE,
                 'configs/mask_rcnn/shvit_s4_fpn_1x_coco.py'):
        assert config_path(name) == expected
    assert config_path('_base_/schedules/adamw_1x_coco.py').endswith('adamw_1x_coco.py')
    names = list_configs()
    assert 'semfpn/shvit_s4_fpn_40k_ade20k.py' in names
    assert not any(n.startswith('_base_') for n in names)


def _resources_at(package_dir):
    """mmext.resources loaded from a copy in ``package_dir`` (its paths follow its own file)."""
    import importlib.util
    os.makedirs(package_dir, exist_ok=True)
    shutil.copy(osp.join(REPO, 'mmext', 'resources.py'), package_dir)
    spec = importlib.util.spec_from_file_location(
        f'resources_copy_{abs(hash(package_dir))}', osp.join(package_dir, 'resources.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _touch(path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    open(path, 'w').close()


def test_checkout_wins_over_a_stale_mim_and_a_wheel_uses_mim(tmp_path):
    checkout = str(tmp_path / 'checkout')
    res = _resources_at(osp.join(checkout, 'mmext'))
    _touch(osp.join(checkout, 'setup.py'))
    _touch(osp.join(checkout, 'configs', 'retinanet', 'a.py'))
    _touch(osp.join(checkout, 'mmext', '.mim', 'configs', 'retinanet', 'a.py'))  # an old copy
    assert res.config_path('mmext::retinanet/a.py') == osp.join(checkout, 'configs', 'retinanet',
                                                                 'a.py')
    site = str(tmp_path / 'site')  # an installed wheel: no setup.py or configs/ beside mmext
    res = _resources_at(osp.join(site, 'mmext'))
    _touch(osp.join(site, 'mmext', '.mim', 'configs', 'retinanet', 'a.py'))
    _touch(osp.join(site, 'configs', 'retinanet', 'a.py'))  # another package's stray configs/
    assert res.config_path('retinanet/a.py') == osp.join(site, 'mmext', '.mim', 'configs',
                                                         'retinanet', 'a.py')
    assert res.model_index_path() == osp.join(site, 'mmext', '.mim', 'model-index.yml')
    broken = _resources_at(str(tmp_path / 'broken' / 'mmext'))
    with pytest.raises(ConfigError, match='cannot find its configs'):
        broken.config_root()


@pytest.mark.parametrize('name', ['mask_rcnn/nope.py', 'mmext::nope', '../setup.py',
                                  'mmext::../../setup.py', '', None])
def test_config_path_rejects_unknown_names(name):
    from mmext.resources import config_path
    with pytest.raises(ConfigError, match='config'):
        config_path(name)


def test_mmext_scheme_is_registered_at_import():
    import mmext  # noqa: F401
    from mmengine.config import Config
    from mmengine.config.utils import MODULE2PACKAGE
    assert MODULE2PACKAGE.get('mmext') == 'mmext'
    assert getattr(Config._get_cfg_path, '_mmext_scheme', False)
    # other paths still go to mmengine
    assert Config._get_cfg_path('../x.py', '/a/b/c.py') == ('/a/b/../x.py', None)


def test_mmext_scheme_registration_guards(monkeypatch):
    import mmengine
    from mmext.resources import register_config_package
    assert register_config_package() is True  # already applied at import: idempotent
    monkeypatch.setenv('MMEXT_NO_PATCH', '1')
    assert register_config_package() is False
    monkeypatch.delenv('MMEXT_NO_PATCH')
    monkeypatch.setattr(mmengine, '__version__', '0.11.0')
    with pytest.warns(UserWarning, match='mmext::'):
        assert register_config_package() is False


def test_mmext_base_gives_the_config_itself(tmp_path):
    import mmext  # noqa: F401
    from mmengine.config import Config
    cfg = Config.fromfile(_write_user_config(tmp_path))
    ref = Config.fromfile(osp.join(REPO, 'configs', 'mask_rcnn', 'shvit_s4_fpn_1x_coco.py'))
    expected = ref.to_dict()
    expected['model']['backbone']['init_cfg'] = None
    assert cfg.to_dict() == expected
    # read as the file itself: the detector keeps mmdet's scope, nothing is stamped 'mmext'
    assert cfg.model.get('_scope_') == 'mmdet'
    assert '_scope_' not in cfg.model.backbone
    with open(tmp_path / 'bad.py', 'w') as f:
        f.write("_base_ = 'mmext::mask_rcnn/nope.py'\n")
    with pytest.raises(ConfigError, match="no config 'mmext::mask_rcnn/nope.py'"):
        Config.fromfile(str(tmp_path / 'bad.py'))


@pytest.mark.slow
def test_checkout_resolution_from_elsewhere_and_custom_imports_too_late(tmp_path):
    """From another directory: ``custom_imports`` in the same file cannot make ``mmext::`` work
    (mmengine reads ``_base_`` first); after ``import mmext`` it resolves to the checkout."""
    user = _write_user_config(
        tmp_path, extra="custom_imports = dict(imports=['mmext'], allow_failed_imports=False)\n")
    proc = _run_python(f'''
        import json
        from mmengine.config import Config
        try:
            Config.fromfile({user!r})
            before = 'resolved'
        except Exception as exc:
            before = f'{{type(exc).__name__}}: {{exc}}'
        import mmext
        from mmext.resources import config_path
        cfg = Config.fromfile({user!r})
        print(json.dumps(dict(before=before, mmext=mmext.__file__, arch=cfg.model.backbone.arch,
                              path=config_path({USER_BASE!r}))))
    ''', cwd=tmp_path)
    out = _last_json(proc)
    assert 'does not support to load mmext config' in out['before']
    assert out['mmext'] == osp.join(REPO, 'mmext', '__init__.py')
    assert out['path'] == osp.join(REPO, 'configs', 'mask_rcnn', 'shvit_s4_fpn_1x_coco.py')
    assert out['arch'] == 's4'


def test_mim_dir_is_git_ignored():
    if shutil.which('git') is None or not osp.isdir(osp.join(REPO, '.git')):
        pytest.skip('needs git and a git checkout to ask git check-ignore')
    proc = subprocess.run(['git', 'check-ignore', '-q', 'mmext/.mim/configs/x.py'], cwd=REPO)
    assert proc.returncode == 0, 'mmext/.mim is not git-ignored'


# ----------------------------------------------------------------------------- the wheel
@pytest.mark.slow
def test_wheel_carries_configs_tools_and_model_index(built_wheel):
    names = built_wheel['names']
    expected = set()
    for folder in ('configs', 'tools'):
        for dirpath, _, files in os.walk(osp.join(REPO, folder)):
            if '__pycache__' in dirpath:
                continue
            rel = osp.relpath(dirpath, REPO)
            expected |= {f'mmext/.mim/{rel}/{f}'.replace(os.sep, '/') for f in files
                         if not f.endswith('.pyc')}
    expected |= {'mmext/.mim/model-index.yml', 'mmext/resources.py', 'mmext/__init__.py'}
    missing = expected - names
    assert not missing, f'not in the wheel: {sorted(missing)[:10]}'
    assert 'mmext/.mim/configs/mask_rcnn/shvit_s4_fpn_1x_coco.py' in names
    assert not [n for n in names if n.startswith(('tests/', 'configs/', 'tools/'))]
    requires = re.findall(r'^Requires-Dist: (.+)$', built_wheel['metadata'], re.M)
    for package, bound in (('torch', '>=2.0'), ('mmengine', '<0.11'), ('safetensors', '')):
        assert any(r.startswith(package) and bound in r for r in requires), (package, requires)
    assert any(r.startswith('onnxruntime') and 'deploy' in r for r in requires), requires


@pytest.mark.slow
def test_installed_wheel_resolves_mmext_bases(built_wheel, tmp_path):
    """The unzipped wheel on PYTHONPATH, run from elsewhere: mmext, its configs and the demo's
    default config all come from the wheel (mmext/.mim), and ``mmext::`` bases resolve."""
    site = built_wheel['site']
    user = _write_user_config(tmp_path)
    proc = _run_python(f'''
        import json
        import mmext
        from mmengine.config import Config
        from mmext import resources
        from mmext.apis import demo
        cfg = Config.fromfile({user!r})
        print(json.dumps(dict(
            mmext=mmext.__file__, root=resources.config_root(),
            base=resources.config_path({USER_BASE!r}),
            demo=resources.config_path(demo.DEMO_CONFIG),
            index=resources.model_index_path(),
            arch=cfg.model.backbone.arch, neck=cfg.model.neck.type)))
    ''', cwd=tmp_path, env_extra=dict(PYTHONPATH=site))
    out = _last_json(proc)
    mim = osp.join(site, 'mmext', '.mim')
    assert out['mmext'] == osp.join(site, 'mmext', '__init__.py')
    assert out['root'] == osp.join(mim, 'configs')
    assert out['base'] == osp.join(mim, 'configs', 'mask_rcnn', 'shvit_s4_fpn_1x_coco.py')
    assert out['demo'] == out['base']
    assert out['index'] == osp.join(mim, 'model-index.yml') and osp.isfile(out['index'])
    assert (out['arch'], out['neck']) == ('s4', 'mmext.TransConvFPN')


# ----------------------------------------------------------------------------- metafiles
def _load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _metafiles():
    return sorted(f'configs/{d}/metafile.yml' for d in os.listdir(osp.join(REPO, 'configs'))
                  if osp.isfile(osp.join(REPO, 'configs', d, 'metafile.yml')))


_CODE_PARAMS = {}


def _code_params():
    """``{'shvit_s4': 16.139, ...}``: every arch of every family built from mmext's code with its
    default arguments (no classifier), parameters in millions to 3 decimals; built once."""
    if not _CODE_PARAMS:
        import torch

        from mmext.analysis import count_params
        for family in FAMILIES.values():
            for arch in family.cls.arch_settings:
                with torch.device('meta'):  # shapes only: no weights initialised
                    model = family.cls(arch)
                _CODE_PARAMS[family.model_name(arch)] = round(count_params(model) / 1e6, 3)
    return _CODE_PARAMS


def test_model_index_imports_every_metafile():
    index = _load_yaml(osp.join(REPO, 'model-index.yml'))
    assert sorted(index['Import']) == _metafiles()
    for folder in METAFILE_FOLDERS:
        assert f'configs/{folder}/metafile.yml' in index['Import']


def test_metafiles_list_every_config_with_valid_fields():
    names = []
    for meta_path in _metafiles():
        meta = _load_yaml(osp.join(REPO, meta_path))
        folder = meta_path.split('/')[1]
        collections = {c['Name'] for c in meta.get('Collections', [])}
        listed = []
        for model in meta['Models']:
            names.append(model['Name'])
            assert model['In Collection'] in collections, model['Name']
            assert osp.isfile(osp.join(REPO, model['Config'])), model['Config']
            assert model['Config'].startswith(f'configs/{folder}/'), model['Config']
            listed.append(model['Config'])
            # no trained detector weights are released: mim/mmengine.hub would load `Weights`
            # as a whole-model checkpoint, so the backbone's URL lives in the metadata
            assert 'Weights' not in model, model['Name']
            weights = model['Metadata'].get('Pretrained Backbone')
            if weights is not None:
                assert weights in CANONICAL_WEIGHTS.values(), (model['Name'], weights)
        on_disk = sorted(f'configs/{folder}/{f}' for f in os.listdir(osp.join(REPO, 'configs',
                                                                               folder))
                         if f.endswith('.py'))
        assert sorted(listed) == on_disk, meta_path
    assert len(names) == len(set(names)), 'model names must be unique across the model index'


@pytest.mark.parametrize('folder', sorted(METAFILE_FOLDERS))
def test_metafile_weights_params_and_paper_results(folder):
    from mmext.analysis.summarize import PAPER_RESULTS
    suffix, task = METAFILE_FOLDERS[folder]
    params = _code_params()
    assert sorted(params) == sorted(f.model_name(a) for f, a, _ in arch_entries()), params
    paper = {r['backbone']: r for r in PAPER_RESULTS if r['task'] == task}
    meta = _load_yaml(osp.join(REPO, 'configs', folder, 'metafile.yml'))
    seen = set()
    for model in meta['Models']:
        backbone = osp.basename(model['Config'])[:-len(suffix)]
        seen.add(backbone)
        # the backbone's own ImageNet weights (or none for EdgeViT)
        pretrained = model['Metadata'].get('Pretrained Backbone')
        if backbone in NO_WEIGHTS:
            assert pretrained is None, model['Name']
        else:
            assert pretrained == CANONICAL_WEIGHTS[backbone], model['Name']
        # a config that points init_cfg at a URL points at the same weights
        with open(osp.join(REPO, model['Config'])) as f:
            urls = re.findall(r"checkpoint=['\"](https?://[^'\"]+)['\"]", f.read())
        assert all(u == pretrained for u in urls), (model['Config'], urls)
        assert model['Metadata']['Backbone Parameters (M)'] == params[backbone], model['Name']
        assert model['Metadata']['Backbone'].lower().replace('-', '_') == backbone
        # the backbone's paper, as the manifest names it
        source = family_by_prefix(backbone.rsplit('_', 1)[0]).paper
        assert (model['Paper']['Title'], model['Paper']['URL']) == (source.title, source.url), \
            model['Name']
        # Results: exactly the papers' numbers of PAPER_RESULTS, where it has them
        metrics = {METRIC_NAMES[k]: v for r in model.get('Results', [])
                   for k, v in r['Metrics'].items()}
        ref = paper.get(backbone, {})
        assert metrics == {k: ref[k] for k in METRIC_NAMES.values() if ref.get(k) is not None}, \
            model['Name']
    assert seen == set(params)


# ----------------------------------------------------------------------------- slurm
SLURM = dict(train=('tools/slurm_train.sh', 'WORK_DIR', 'tools/train.py'),
             test=('tools/slurm_test.sh', 'CHECKPOINT', 'tools/test.py'))


@pytest.fixture()
def fake_srun(tmp_path):
    """A stand-in for Slurm's ``srun`` (not installed here) that prints each argument it gets."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    srun.chmod(0o755)
    return str(bin_dir)


def _bash(script, args, env_extra=None):
    env = dict(os.environ)
    for key in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS'):
        env.pop(key, None)
    env.update(env_extra or {})
    return subprocess.run(['bash', osp.join(REPO, script), *args], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.parametrize('kind', sorted(SLURM))
def test_slurm_script_parses_and_needs_its_arguments(kind):
    script, fourth, _ = SLURM[kind]
    assert subprocess.run(['bash', '-n', osp.join(REPO, script)]).returncode == 0
    for args in ([], ['p', 'job', 'cfg.py']):
        proc = _bash(script, args)
        assert proc.returncode == 2 and proc.stdout == ''
        assert 'usage:' in proc.stderr and f'PARTITION JOB_NAME CONFIG {fourth}' in proc.stderr
    proc = _bash(script, ['p', 'job', 'cfg.py', 'x'], dict(GPUS='two'))
    assert proc.returncode == 2 and "GPUS must be a positive integer, got 'two'" in proc.stderr


@pytest.mark.parametrize('kind', sorted(SLURM))
def test_slurm_script_builds_the_srun_command(kind, fake_srun):
    script, _, tool = SLURM[kind]
    path = dict(PATH=fake_srun + os.pathsep + os.environ['PATH'], PYTHON='python3')
    proc = _bash(script, ['gpu', 'exp1', 'configs/my cfg.py', 'arg4', '--cfg-options', 'a=1'],
                 dict(path, GPUS='16', SRUN_ARGS='--quotatype=auto --time=10'))
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    head = ['-p', 'gpu', '--job-name=exp1', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
            '--cpus-per-task=5', '--kill-on-bad-exit=1', '--quotatype=auto', '--time=10',
            'python3', '-u', osp.join(REPO, tool), 'configs/my cfg.py']
    assert argv[:len(head)] == head
    fourth = ['--work-dir=arg4'] if kind == 'train' else ['arg4']
    assert argv[len(head):] == fourth + ['--launcher=slurm', '--cfg-options', 'a=1']
    # one GPU: one task on one node, not 8 per node
    proc = _bash(script, ['gpu', 'exp1', 'c.py', 'arg4'], dict(path, GPUS='1', CPUS_PER_TASK='2'))
    argv = proc.stdout.splitlines()
    assert {'--gres=gpu:1', '--ntasks=1', '--ntasks-per-node=1', '--cpus-per-task=2'} <= set(argv)
