# Copyright (c) mmbcn contributors. All rights reserved.
"""Paper Fig. 3: StatDiff (Eq. 8) per epoch of a CIFAR-style ResNet trained
with GN, GN+WS, LN, LN+WS and BCN+WS.

After every epoch, the mean and standard deviation of StatDiff over all
groups of all norm layers (running statistics of the channels each norm
normalizes together, see ``mmbcn.analysis.norm_probe``), and, over one pass
of the test set in eval mode, the test accuracy and the fractions of dead
and under-represented channels. Writes a CSV (every epoch), a markdown
table (last epoch) and a plot of StatDiff mean and std per epoch (PNG).

Data: scikit-learn's bundled digits upsampled to --image-size (default), or
CIFAR-10 in its python format with --cifar10 PATH.

    python tools/analysis/fig3_stat_diff.py                     # digits
    python tools/analysis/fig3_stat_diff.py --cifar10 data/cifar10 \
        --depth 20 --epochs 30 --train-size 10000
"""
import argparse
import time

import torch

import mmbcn  # noqa: F401  (registers WSConv, BCN)
from analysis_common import add_data_options, parse_checked, prepare, report
from mmbcn.analysis import CifarResNet, SingularityProbe, evaluate, train

VARIANTS = {
    'GN': (dict(type='GN'), None),
    'GN+WS': (dict(type='GN'), dict(type='WSConv')),
    'LN': (dict(type='GN', num_groups=1), None),
    'LN+WS': (dict(type='GN', num_groups=1), dict(type='WSConv')),
    'BCN': (dict(type='BCN'), None),
    'BCN+WS': (dict(type='BCN'), dict(type='WSConv')),
    'BN': (dict(type='BN'), None),
    'BN+WS': (dict(type='BN'), dict(type='WSConv')),
}
DEFAULT_VARIANTS = 'GN,GN+WS,LN,LN+WS,BCN+WS'
COLUMNS = ('variant', 'epoch', 'train_loss', 'test_acc', 'stat_diff_mean',
           'stat_diff_std', 'dead_fraction', 'small_scale_fraction')


def variant_list(text: str):
    names = [v.strip() for v in text.split(',') if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f'unknown variant(s) {unknown or text!r}; choose from '
            f'{", ".join(VARIANTS)}')
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fig. 3: StatDiff per epoch of a CIFAR ResNet trained '
        'with channel-based normalizations, with and without WS, and BCN')
    parser.add_argument('--variants', type=variant_list,
                        default=variant_list(DEFAULT_VARIANTS),
                        help=f'comma-separated, from {", ".join(VARIANTS)}')
    parser.add_argument('--depth', type=int, default=8,
                        help='ResNet depth 6n+2 (the paper: 110)')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--lr', type=float, default=0.1)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--momentum', type=float, default=0.1,
                        help='running-average factor of tracked statistics')
    add_data_options(parser)
    args = parse_checked(parser, argv)
    if args.depth < 8 or (args.depth - 2) % 6:
        parser.error(f'--depth must be 6n+2 (8, 14, 20, ...), got '
                     f'{args.depth}')
    return args


def run_variant(args, data, name: str):
    train_x, train_y, test_x, test_y = data
    norm_cfg, conv_cfg = VARIANTS[name]
    torch.manual_seed(args.seed)
    model = CifarResNet(
        args.depth, train_x.shape[1], int(train_y.max()) + 1,
        norm_cfg=norm_cfg, conv_cfg=conv_cfg)
    probe = SingularityProbe(model, momentum=args.momentum)
    rows = []

    def record(epoch: int) -> None:
        with probe.capture():
            acc = evaluate(model, test_x, test_y)
        rows.append(dict(variant=name, epoch=epoch, test_acc=acc,
                         **probe.summary()))

    losses = train(model, train_x, train_y, args.epochs, lr=args.lr,
                   batch_size=args.batch_size, seed=args.seed,
                   on_epoch=record)
    probe.remove()
    for row, loss in zip(rows, losses):
        row['train_loss'] = loss
    return rows


def plot(rows, variants, title: str):
    """StatDiff's mean and std against epoch (a matplotlib figure)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for name in variants:
        mine = [r for r in rows if r['variant'] == name]
        epochs = [r['epoch'] for r in mine]
        style = '-' if 'WS' in name else '--'
        for ax, key in zip(axes, ('stat_diff_mean', 'stat_diff_std')):
            ax.plot(epochs, [r[key] for r in mine], style, marker='o',
                    markersize=3, label=name)
    for ax, what in zip(axes, ('mean', 'standard deviation')):
        ax.set_xlabel('epoch')
        ax.set_ylabel(f'StatDiff {what}')
        ax.set_title(f'{what.capitalize()} of StatDiff (Eq. 8), all groups',
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv=None):
    args = parse_args(argv)
    data, dataset, start = prepare(args)
    rows = []
    for name in args.variants:
        mine = run_variant(args, data, name)
        rows += mine
        for r in mine:
            print(f"{name} epoch {r['epoch']}: loss {r['train_loss']:.4f} "
                  f"acc {r['test_acc']:.4f} StatDiff mean "
                  f"{r['stat_diff_mean']:.4f} std {r['stat_diff_std']:.4f} "
                  f"dead {r['dead_fraction']:.4f} small "
                  f"{r['small_scale_fraction']:.4f}", flush=True)
        print(f'{name} done ({time.time() - start:.0f} s)', flush=True)
    last = [r for r in rows if r['epoch'] == max(
        q['epoch'] for q in rows if q['variant'] == r['variant'])]
    title = f'ResNet-{args.depth} on {dataset}, {args.epochs} epochs'
    report(args, 'fig3_stat_diff', dataset, rows, COLUMNS,
           plot(rows, args.variants, title), start, last)
    return rows


if __name__ == '__main__':
    main()
