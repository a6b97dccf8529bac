# Copyright (c) mmbcn contributors. All rights reserved.
"""Paper Fig. 1: accuracy against the distance to elimination singularities.

Trains the 4-layer conv net (32 channels per layer, 2x2 average pooling
after each, global pooling, FC) whose norms normalize every channel to a
fixed mean ~ N(0, sigma_mu) and std exp(N(0, sigma_sigma)) (Eq. 6-7), for
each (sigma_mu, sigma_sigma) of a grid; (0, 0) is BatchNorm. Writes a CSV
and markdown table and a scatter plot (PNG): circle size grows with test
accuracy, red crosses mark failures (accuracy below --fail-below or a
non-finite loss).

Data: scikit-learn's bundled digits upsampled to --image-size (default), or
CIFAR-10 in its python format with --cifar10 PATH.

    python tools/analysis/fig1_fixed_statistics.py              # digits
    python tools/analysis/fig1_fixed_statistics.py --cifar10 data/cifar10 \
        --train-size 10000 --epochs 20
"""
import argparse
import math
import time

import torch

import mmbcn  # noqa: F401  (registers WSConv, BCN)
from analysis_common import add_data_options, parse_checked, prepare, report
from mmbcn.analysis import FourLayerConvNet, evaluate, train

COLUMNS = ('sigma_mu', 'sigma_sigma', 'test_acc', 'final_loss', 'failed',
           'diverged')


def float_list(text: str):
    try:
        values = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected comma-separated numbers, got {text!r}')
    if not values or any(v < 0 or not math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f'expected non-negative numbers, got {text!r}')
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fig. 1: accuracy of a 4-layer conv net whose channels '
        'are normalized to fixed, random statistics (Eq. 6-7)')
    parser.add_argument(
        '--grid', type=float_list, default=[0.0, 0.5, 1.0, 2.0, 3.0],
        help='values of both sigma_mu and sigma_sigma (comma-separated)')
    parser.add_argument(
        '--sigma-mu', type=float_list, help='sigma_mu values (default: '
        '--grid)')
    parser.add_argument(
        '--sigma-sigma', type=float_list, help='sigma_sigma values '
        '(default: --grid)')
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--lr', type=float, default=0.05)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--width', type=int, default=32,
                        help='channels per conv layer')
    parser.add_argument(
        '--fail-below', type=float, default=0.7,
        help='test accuracy below which a run counts as a failure (the '
        "paper's 70%%)")
    add_data_options(parser,
                     seed_help='seed of the draws, initialization and order')
    args = parse_checked(parser, argv)
    args.sigma_mu = args.sigma_mu or args.grid
    args.sigma_sigma = args.sigma_sigma or args.grid
    return args


def run_cell(args, data, sigma_mu: float, sigma_sigma: float) -> dict:
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(args.seed)
    model = FourLayerConvNet(
        train_x.shape[1],
        num_classes=int(train_y.max()) + 1,
        norm_cfg=dict(
            type='FixedStatNorm', sigma_mu=sigma_mu, sigma_sigma=sigma_sigma),
        width=args.width)
    losses = train(model, train_x, train_y, args.epochs, lr=args.lr,
                   batch_size=args.batch_size, seed=args.seed)
    diverged = not math.isfinite(losses[-1])
    acc = math.nan if diverged else evaluate(model, test_x, test_y)
    return dict(sigma_mu=sigma_mu, sigma_sigma=sigma_sigma, test_acc=acc,
                final_loss=losses[-1],
                failed='yes' if diverged or acc < args.fail_below else 'no',
                diverged='yes' if diverged else 'no')


def plot(rows, title: str, fail_below: float):
    """The scatter plot of the grid (a matplotlib figure)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ok = [r for r in rows if r['failed'] == 'no']
    bad = [r for r in rows if r['failed'] == 'yes']
    if ok:
        ax.scatter([r['sigma_mu'] for r in ok],
                   [r['sigma_sigma'] for r in ok],
                   s=[900 * r['test_acc']**4 for r in ok],
                   c='tab:blue', alpha=0.6, edgecolors='k',
                   label='trained')
    if bad:
        ax.scatter([r['sigma_mu'] for r in bad],
                   [r['sigma_sigma'] for r in bad],
                   marker='x', s=120, c='red', linewidths=2.5,
                   label=f'failure (acc < {fail_below:.0%})')
    for r in rows:
        label = ('diverged' if r['diverged'] == 'yes' else
                 f"{100 * r['test_acc']:.1f}")
        ax.annotate(label,
                    (r['sigma_mu'], r['sigma_sigma']),
                    textcoords='offset points', xytext=(0, 13),
                    ha='center', fontsize=8)
    ax.set_xlabel(r'$\sigma_\mu$ (spread of channel means)')
    ax.set_ylabel(r'$\sigma_\sigma$ (spread of log channel stds)')
    ax.set_title(title, fontsize=10)
    pad = 0.12 * max(max(r['sigma_mu'] for r in rows),
                     max(r['sigma_sigma'] for r in rows), 1.0)
    ax.set_xlim(min(r['sigma_mu'] for r in rows) - pad,
                max(r['sigma_mu'] for r in rows) + pad)
    ax.set_ylim(min(r['sigma_sigma'] for r in rows) - pad,
                max(r['sigma_sigma'] for r in rows) + 2 * pad)
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=2,
              fontsize=8, markerscale=0.5)
    ax.grid(alpha=0.3)
    return fig


def main(argv=None):
    args = parse_args(argv)
    data, dataset, start = prepare(args)
    rows = []
    for sigma_mu in args.sigma_mu:
        for sigma_sigma in args.sigma_sigma:
            row = run_cell(args, data, sigma_mu, sigma_sigma)
            rows.append(row)
            print(f'sigma_mu={sigma_mu:g} sigma_sigma={sigma_sigma:g}: '
                  f"test acc {row['test_acc']:.4f}, final loss "
                  f"{row['final_loss']:.4f}"
                  f"{'  FAILED' if row['failed'] == 'yes' else ''}"
                  f'  ({time.time() - start:.0f} s)', flush=True)
    title = (f'Fixed-statistics norm (Eq. 6-7), 4-layer conv net, {dataset}'
             f'\n{args.epochs} epochs; circle size ~ test accuracy (%)')
    report(args, 'fig1_fixed_statistics', dataset, rows, COLUMNS,
           plot(rows, title, args.fail_below), start)
    return rows


if __name__ == '__main__':
    main()
