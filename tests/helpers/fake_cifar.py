"""A CIFAR-10 folder in the python format (pickled batches), small and
seeded, for the analysis loaders and tools."""
import os
import pickle

import numpy as np


def write_fake_cifar(root, per_batch=10):
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    for name in names:
        batch = {
            b'batch_label': name.encode(),
            b'labels': [int(v) for v in rng.randint(0, 10, per_batch)],
            b'data': rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8),
            b'filenames': [b'x.png'] * per_batch,
        }
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    return folder
