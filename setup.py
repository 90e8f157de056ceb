from setuptools import find_packages, setup

setup(
    name='mmext',
    version='0.1.0',
    description='Fast vision-transformer backbones (SHViT, EfficientFormer, EdgeViT) for '
                'MMDetection 3.x and MMSegmentation 1.x',
    packages=find_packages(include=['mmext', 'mmext.*']),
    python_requires='>=3.8',
    # The backbones need only torch and mmengine; detection and segmentation need the rest.
    install_requires=['torch>=2.0', 'mmengine>=0.10.0,<1.0'],
    extras_require={
        'det': ['mmcv>=2.0.0,<2.2.0', 'mmdet>=3.0.0,<3.4.0', 'pycocotools'],
        'seg': ['mmcv>=2.0.0,<2.2.0', 'mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
        'deploy': ['onnx', 'onnxruntime'],
    },
)
