# Copyright (c) mmbcn contributors. All rights reserved.
"""Image classification data for the analysis experiments, as in-memory
tensors ``(train_x, train_y, test_x, test_y)`` with images (N, C, S, S)
standardized per channel by the training set's mean and std.

* :func:`load_digits`: scikit-learn's bundled handwritten digits (1,797
  8x8 grey images, 10 classes; no download), upsampled bilinearly to S x S.
  Needs the ``analysis`` extra (``pip install mmbcn[analysis]``).
* :func:`load_cifar10`: CIFAR-10 in its standard python format (the
  ``cifar-10-batches-py`` folder: ``data_batch_1`` ... ``data_batch_5``,
  ``test_batch``), read with an unpickler that builds only numpy arrays.
"""
import os.path as osp
import pickle
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Split = Tuple[Tensor, Tensor, Tensor, Tensor]

CIFAR10_FOLDER = 'cifar-10-batches-py'
CIFAR10_TRAIN = tuple(f'data_batch_{i}' for i in range(1, 6))
CIFAR10_TEST = 'test_batch'


def standardize(train_x: Tensor, test_x: Tensor) -> Tuple[Tensor, Tensor]:
    """Both sets standardized per channel by the training set's
    statistics."""
    dims = (0, 2, 3)
    mean = train_x.mean(dims, keepdim=True)
    std = train_x.std(dims, keepdim=True).clamp(min=1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def _subset(x: Tensor, y: Tensor, size: Optional[int],
            generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    if size is None or size >= len(y):
        return x, y
    if size <= 0:
        raise ValueError(f'subset size must be positive, got {size}')
    index = torch.randperm(len(y), generator=generator)[:size]
    return x[index], y[index]


def load_digits(image_size: int = 32,
                test_fraction: float = 0.25,
                seed: int = 0) -> Split:
    """scikit-learn's handwritten digits, upsampled to ``image_size``.

    Args:
        image_size (int): Side S of the upsampled (1, S, S) images.
            Default 32 (CIFAR's).
        test_fraction (float): Share held out for testing, drawn at random
            (fixed by ``seed``). Default 0.25 (450 of 1,797).
        seed (int): Seed of the split. Default 0.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise ImportError('the digits data set comes with scikit-learn: '
                          'pip install "mmbcn[analysis]"') from e
    if not 0 < test_fraction < 1:
        raise ValueError(f'test_fraction={test_fraction} must lie in (0, 1)')
    digits = sklearn_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0
    images = F.interpolate(
        images.unsqueeze(1), size=(image_size, image_size),
        mode='bilinear', align_corners=False)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(
        len(labels), generator=torch.Generator().manual_seed(seed))
    num_test = int(round(test_fraction * len(labels)))
    test, train = order[:num_test], order[num_test:]
    train_x, test_x = standardize(images[train], images[test])
    return train_x, labels[train], test_x, labels[test]


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds only what CIFAR's pickles hold (dicts, lists, bytes and
    numpy arrays); anything else is refused instead of executed."""

    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'),
        ('numpy', 'ndarray'),
        ('numpy', 'dtype'),
        ('_codecs', 'encode'),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing {module}.{name}: a CIFAR-10 python batch holds only '
            'numpy arrays, lists and bytes')


def _read_cifar_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, 'rb') as f:
            batch = _ArrayUnpickler(f, encoding='bytes').load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, ImportError, IndexError) as e:
        raise ValueError(f'{path} is not a CIFAR-10 python-format batch '
                         f'(a pickled dict): {e}') from e
    if not isinstance(batch, dict):
        raise ValueError(f'{path} is not a CIFAR-10 python-format batch: it '
                         f'holds a {type(batch).__name__}, not a dict')
    data = batch.get(b'data', batch.get('data'))
    labels = batch.get(b'labels', batch.get('labels'))
    if data is None or labels is None:
        raise ValueError(f'{path} is not a CIFAR-10 python-format batch: it '
                         "has no 'data' and 'labels' entries")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(
            data):
        raise ValueError(f'{path}: expected data of shape (N, 3072) and N '
                         f'labels, got data {data.shape} and {len(labels)} '
                         'labels')
    return data.reshape(-1, 3, 32, 32), labels


def cifar10_folder(path: str) -> str:
    """The ``cifar-10-batches-py`` folder at or inside ``path``."""
    if not osp.exists(path):
        raise FileNotFoundError(f'CIFAR-10 path {path} does not exist')
    if not osp.isdir(path):
        raise ValueError(f'CIFAR-10 path {path} is not a folder; give the '
                         f'{CIFAR10_FOLDER} folder of the python version')
    nested = osp.join(path, CIFAR10_FOLDER)
    folder = nested if osp.isdir(nested) else path
    missing = [
        name for name in CIFAR10_TRAIN + (CIFAR10_TEST, )
        if not osp.isfile(osp.join(folder, name))
    ]
    if missing:
        raise ValueError(
            f'{folder} is not CIFAR-10 in the python format: missing '
            f'{", ".join(missing)} (expected {CIFAR10_FOLDER}/'
            'data_batch_1..5 and test_batch)')
    return folder


def load_cifar10(path: str,
                 train_size: Optional[int] = None,
                 test_size: Optional[int] = None,
                 seed: int = 0) -> Split:
    """CIFAR-10 from its python format at ``path`` (the
    ``cifar-10-batches-py`` folder or the folder holding it).

    Args:
        train_size, test_size (int | None): Random subsets of that many
            images (fixed by ``seed``) to keep CPU runs short. None: all
            50,000 / 10,000.
    """
    folder = cifar10_folder(path)
    train = [_read_cifar_batch(osp.join(folder, n)) for n in CIFAR10_TRAIN]
    test_data, test_labels = _read_cifar_batch(osp.join(folder, CIFAR10_TEST))
    train_x = torch.from_numpy(np.concatenate([d for d, _ in train]))
    train_y = torch.from_numpy(np.concatenate([y for _, y in train]))
    test_x = torch.from_numpy(test_data)
    test_y = torch.from_numpy(test_labels)
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y = _subset(train_x, train_y, train_size, generator)
    test_x, test_y = _subset(test_x, test_y, test_size, generator)
    train_x, test_x = standardize(train_x.float() / 255, test_x.float() / 255)
    return train_x, train_y.long(), test_x, test_y.long()


def load_data(cifar10: Optional[str] = None,
              image_size: int = 32,
              train_size: Optional[int] = None,
              test_size: Optional[int] = None,
              seed: int = 0) -> Split:
    """CIFAR-10 from the python-format folder ``cifar10`` if given (subsets
    of ``train_size`` / ``test_size``), else the bundled digits upsampled to
    ``image_size`` (the subset sizes then do not apply)."""
    if cifar10 is not None:
        return load_cifar10(cifar10, train_size, test_size, seed)
    return load_digits(image_size, seed=seed)
