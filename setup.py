# Copyright (c) mmbcn contributors. All rights reserved.
"""mmbcn: Batch-Channel Normalization and Weight Standardization for the
OpenMMLab detection and segmentation stack.

torch and mmcv are installed before this package (see README): torch's
wheel depends on the platform (CPU or a CUDA version) and mmcv must match
it, so neither is pinned here in a way that would make pip replace them.

The fused CPU kernel of BCN (mmbcn/ops/csrc) is compiled against the
installed torch: ``python setup.py build_ext --inplace`` (what
tools/install.sh does), or ``pip install --no-build-isolation`` with a pip
recent enough to build editable wheels itself (older pips hand the build to
an isolated environment without torch, which installs without the kernel).
With ``MMBCN_WITH_NATIVE=0`` the package installs without it, and BCN runs
its Python formulation (same results, slower on CPU).
"""
import os
import os.path as osp
import sys

from setuptools import find_packages, setup


def version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmbcn', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def native_extension():
    """``ext_modules`` and ``cmdclass`` for the fused CPU kernel."""
    if os.environ.get('MMBCN_WITH_NATIVE', '1') == '0':
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print('mmbcn: torch is not importable here (build isolation?); '
              'installing without the native BCN kernel', file=sys.stderr)
        return {}
    flags = ['-O3']
    if sys.platform.startswith('linux'):
        # OpenMP runs at::parallel_for in parallel (torch links libgomp);
        # -fopenmp-simd vectorizes the row reductions; no errno lets sqrt
        # vectorize.
        flags += ['-fopenmp', '-fopenmp-simd', '-fno-math-errno']
    ext = CppExtension(
        'mmbcn.ops._bcn_cpu', ['mmbcn/ops/csrc/bcn_cpu.cpp'],
        extra_compile_args=flags,
        extra_link_args=['-fopenmp'] if '-fopenmp' in flags else [])
    return dict(ext_modules=[ext],
                cmdclass={'build_ext': BuildExtension.with_options(
                    use_ninja=False)})


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
    python_requires='>=3.9',
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
        # Triton: the GPU kernels, tested on CPU under TRITON_INTERPRET=1.
        'tests': ['pytest', 'pytest-xdist', 'flake8',
                  'triton>=3.2; platform_system == "Linux"'],
        'triton': ['triton>=3.2'],
        'analysis': ['scikit-learn', 'matplotlib'],
        # tools/deploy/export_onnx.py, and TensorBoard logging
        # (tools/train.py --tensorboard, TensorboardVisBackend).
        # onnxscript: torch.onnx.export's default (dynamo) exporter.
        'deploy': ['onnx>=1.17', 'onnxruntime>=1.20', 'onnxscript>=0.5',
                   'tensorboard>=2.14'],
        'vis': ['tensorboard>=2.14'],
    },
    zip_safe=False,
    **native_extension(),
)
