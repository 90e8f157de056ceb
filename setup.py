"""mmext's packaging.

A wheel (``pip wheel .``, ``pip install .``, or an install from the sdist) carries the configs the
OpenMMLab way: ``build_py`` copies ``configs/``, ``tools/`` and ``model-index.yml`` from the
repository root into ``mmext/.mim/`` of the build, so that ``mmext::`` inheritance, the demo and
``mim`` find them in ``site-packages/mmext/.mim``. The copies go to the build directory only, never
into the source tree. An editable install (``make install``: ``pip install --no-build-isolation
--no-deps -e .``) copies nothing: the package runs from the checkout, where
:mod:`mmext.resources` finds ``configs/`` at the repository root.
"""
import os
import os.path as osp
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))

#: Copied from the repository root into mmext/.mim of a wheel (kept in step with
#: mmext.resources.MIM_CONTENTS; tests/test_packaging.py checks both).
MIM_CONTENTS = ('configs', 'tools', 'model-index.yml')
_MIM_IGNORE = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pth', '*.onnx')


def read_version():
    with open(osp.join(HERE, 'mmext', '__init__.py'), encoding='utf-8') as f:
        match = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", f.read(), re.M)
    if match is None:
        raise RuntimeError('mmext/__init__.py has no __version__ line')
    return match.group(1)


def read_readme():
    path = osp.join(HERE, 'README.md')
    if not osp.isfile(path):
        return ''
    with open(path, encoding='utf-8') as f:
        return f.read()


class BuildPyWithMim(build_py):
    """``build_py`` that also puts configs, tools and model-index.yml into ``mmext/.mim``."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return  # an editable install runs from the checkout: nothing to copy
        target = osp.join(self.build_lib, 'mmext', '.mim')
        if osp.isdir(target):
            shutil.rmtree(target)  # no stale files from an earlier build
        os.makedirs(target)
        for name in MIM_CONTENTS:
            src = osp.join(HERE, name)
            if not osp.exists(src):
                raise FileNotFoundError(
                    f'{src} is missing: a wheel of mmext must carry {", ".join(MIM_CONTENTS)}. '
                    f'Build from a checkout or from the sdist (MANIFEST.in includes them).')
            if osp.isdir(src):
                shutil.copytree(src, osp.join(target, name), ignore=_MIM_IGNORE)
            else:
                shutil.copy2(src, osp.join(target, name))

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, 'editable_mode', False):
            return outputs
        target = osp.join(self.build_lib, 'mmext', '.mim')
        for dirpath, _, files in os.walk(target):
            outputs += [osp.join(dirpath, f) for f in files]
        return outputs


setup(
    name='mmext',
    version=read_version(),
    description='Fast vision-transformer backbones (SHViT, EfficientFormer V1/V2, EdgeViT) for '
                'MMDetection 3.x and MMSegmentation 1.x',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    keywords='computer vision, object detection, semantic segmentation, vision transformer, '
             'OpenMMLab',
    license='Apache-2.0',
    classifiers=[
        'Development Status :: 4 - Beta',
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.8',
        'Programming Language :: Python :: 3.9',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    packages=find_packages(include=['mmext', 'mmext.*']),
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,  # configs are read as files
    # The environment mmdet 3.3 users have: Python 3.8-3.11, torch 2.0/2.1 with OpenMMLab's
    # prebuilt mmcv 2.1.0, numpy 1.x. mmext.compat adapts to the running torch (tested on 2.1.2
    # and 2.13.0); no upper bounds, so an install never replaces what is there.
    python_requires='>=3.8',
    # The backbones need torch, mmengine, numpy and safetensors (timm's weights); detection and
    # segmentation need the extras.
    install_requires=[
        'torch>=2.0',
        # mmext.compat and mmext.resources extend mmengine 0.10's checkpoint and config loaders
        'mmengine>=0.10.0,<0.11.0',
        'numpy',
        'safetensors',
    ],
    extras_require={
        'det': ['mmcv>=2.0.0,<2.2.0', 'mmdet>=3.0.0,<3.4.0', 'pycocotools'],
        'seg': ['mmcv>=2.0.0,<2.2.0', 'mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
        'deploy': ['onnx', 'onnxruntime'],
        # the openvino / openvino_bf16 benchmark modes (optional; skipped with a reason without it)
        # NNCF: the OpenVINO int8 format of tools/benchmark_formats.py
        'openvino': ['openvino', 'nncf'],
        'all': ['mmcv>=2.0.0,<2.2.0', 'mmdet>=3.0.0,<3.4.0', 'pycocotools',
                'mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex', 'onnx', 'onnxruntime'],
        'tests': ['pytest'],
    },
)
