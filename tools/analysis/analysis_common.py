# Copyright (c) mmbcn contributors. All rights reserved.
"""What the Fig. 1 and Fig. 3 tools share: the data and run options, the
data loaded and described, and the report written (CSV, markdown, PNG).
The scripts import it from beside them (``python tools/analysis/<tool>.py``
puts this folder on ``sys.path``)."""
import argparse
import os.path as osp
import time

import torch

from mmbcn.analysis import load_data, write_report


def add_data_options(parser: argparse.ArgumentParser, seed_help=None):
    """--seed, the data (digits or CIFAR-10, sizes), --threads, --out-dir."""
    parser.add_argument('--seed', type=int, default=0, help=seed_help)
    parser.add_argument('--cifar10', metavar='PATH',
                        help='CIFAR-10 python-format folder (default: the '
                        'bundled digits)')
    parser.add_argument('--image-size', type=int, default=16,
                        help='digits upsampled to this side')
    parser.add_argument('--train-size', type=int,
                        help='CIFAR-10 training subset size')
    parser.add_argument('--test-size', type=int,
                        help='CIFAR-10 test subset size')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads')
    parser.add_argument('--out-dir', default='docs/figures')


def parse_checked(parser: argparse.ArgumentParser, argv):
    """The arguments, ``--epochs`` checked to be positive."""
    args = parser.parse_args(argv)
    if args.epochs <= 0:
        parser.error(f'--epochs must be positive, got {args.epochs}')
    return args


def prepare(args):
    """Set ``--threads``, load the data; (data, dataset name, start
    time)."""
    torch.set_num_threads(args.threads)
    data = load_data(args.cifar10, args.image_size, args.train_size,
                     args.test_size, args.seed)
    dataset = 'cifar10' if args.cifar10 else 'digits'
    print(f'{dataset}: {len(data[1])} training / {len(data[3])} test '
          f'images of shape {tuple(data[0].shape[1:])}', flush=True)
    return data, dataset, time.time()


def report(args, name: str, dataset: str, rows, columns, fig, start: float,
           table_rows=None) -> None:
    """``<out-dir>/<name>_<dataset>``: the CSV and markdown table of
    ``rows`` (the markdown of ``table_rows`` if given) and the matplotlib
    figure ``fig`` as PNG; prints the table and what it wrote."""
    import matplotlib.pyplot as plt
    stem = osp.join(args.out_dir, f'{name}_{dataset}')
    table = write_report(stem, rows, columns, table_rows)
    fig.tight_layout()
    fig.savefig(stem + '.png', dpi=110)
    plt.close(fig)
    print(table)
    print(f'wrote {stem}.csv, .md, .png in {time.time() - start:.0f} s')
