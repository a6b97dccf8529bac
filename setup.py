# Copyright (c) mmbcn contributors. All rights reserved.
"""mmbcn: Batch-Channel Normalization and Weight Standardization for the
OpenMMLab detection and segmentation stack.

torch and mmcv are installed before this package (see README): torch's
wheel depends on the platform (CPU or a CUDA version) and mmcv must match
it, so neither is pinned here in a way that would make pip replace them.
"""
import os.path as osp

from setuptools import find_packages, setup


def version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmbcn', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmbcn',
    version=version(),
    description='Batch-Channel Normalization and Weight Standardization '
    'for OpenMMLab detection and segmentation',
    long_description=open('README.md', encoding='utf-8').read()
    if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'data')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0',
        'mmcv>=2.0.0,<2.2.0',
        'mmengine>=0.10.0,<1.0.0',
        'mmdet>=3.3.0,<3.4.0',
        'mmsegmentation>=1.2.2,<1.3.0',
        'ftfy',
        'regex',
        'numpy',
        'pycocotools',
        # mmengine 0.10 imports pkg_resources (gone from setuptools 81) to
        # resolve 'mmdet::' / 'mmseg::' config paths.
        'setuptools>=77.0.3,<81',
    ],
    extras_require={
        'tests': ['pytest'],
        'analysis': ['scikit-learn', 'matplotlib'],
    },
    zip_safe=False,
)
