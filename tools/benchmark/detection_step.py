# Copyright (c) mmbcn contributors. All rights reserved.
"""BCN's cost in a detector: Mask R-CNN R-50-FPN with BCN+WS against the
same model with GN+WS (and GN with plain convolutions), measured in the
same run.

    python tools/benchmark/detection_step.py [--config CONFIG]
        [--img-size H W] [--depth 50] [--repeat 3] [--warmup 1]
        [--threads N] [--device cpu|cuda] [--compile] [--no-memory]
        [--skip-train] [--cfg-options k=v ...] [--out-dir DIR]

Models, all from one config (default
``configs/mask_rcnn/mask-rcnn_r50_fpn_bcn-ws-all_2x_coco.py``: BCN+WS in
backbone, neck, 4conv1fc box head and mask head):

* ``BCN+WS``: micro-batch BCN (``estimate=True``, ``update_rate`` set, as
  the paper trains detectors), WS convolutions;
* ``GN+WS``: every BCN config replaced by ``GN`` (same groups);
* ``GN``: GN and plain convolutions (``conv_cfg=None``);
* ``BCN+WS folded``: the BCN+WS model in eval mode after
  ``mmbcn.deploy.fold_bcn``;
* with ``--compile``, ``BCN+WS compiled`` and ``GN+WS compiled``: copies
  whose backbone, neck and RoI heads run under ``torch.compile``
  (inductor; the rest of the detector's Python, proposal sampling and
  losses stays eager, as a compiled detector mostly does), timed beside
  the eager models after their first, compiling iterations (whose time
  is reported).

One synthetic image per iteration (``mmdet.testing.demo_mm_inputs``, with
boxes and masks), no pretrained weights. Measured:

* training iteration (data preprocessing, forward, losses, backward, SGD
  step), BCN+WS vs GN+WS, interleaved over ``--repeat`` rounds after
  ``--warmup`` iterations each; the median of the per-round ratios;
* training-step peak memory: CPU: the resident-set peak of one iteration
  over what was resident before it, each model in its own process whose
  allocator returns freed blocks at once; CUDA: ``max_memory_allocated``;
  also the bytes autograd saves for backward in the forward pass;
* inference (eval, ``mode='tensor'``: backbone, neck, RPN with its
  proposals, RoI heads; no post-processing) of all four models,
  interleaved.

Timings run with the allocator settings of ``layer_speed.py`` (freed
memory kept; ``--system-malloc`` to turn off). Writes
``detection_step.json`` and ``.md`` to ``--out-dir`` and prints the table.
"""
import argparse
import copy
import json
import os.path as osp
import time

import torch
from mmengine.config import Config, ConfigDict, DictAction

import mmbcn  # noqa: F401
from bench_common import (add_output_options, begin, finish, fmt, interleaved,
                          load_average, markdown_table, median_seconds,
                          paired_ratio, peak_memory,
                          reexec_with_timing_allocator, run_memory_worker,
                          saved_bytes_counter)
from mmbcn.deploy import fold_bcn
from mmbcn.deploy.folded_config import (WS_CONV_TYPES, group_norm_cfg,
                                        is_bcn_cfg)
from mmbcn.ops import BatchChannelNorm
from mmbcn.utils import is_type, rewrite_dicts, scoped_build

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(
    REPO, 'configs/mask_rcnn/mask-rcnn_r50_fpn_bcn-ws-all_2x_coco.py')


# ----------------------------------------------------------------- models

def replace_layers(node, ws_to_conv: bool):
    """``node`` with every BCN config turned into GN (same groups, eps and
    requires_grad) and, with ``ws_to_conv``, every WS ``conv_cfg`` into
    ``None`` (``nn.Conv2d``)."""

    def replace(path, cfg):
        if is_bcn_cfg(cfg):
            return group_norm_cfg(cfg)
        if ws_to_conv and is_type(cfg.get('conv_cfg'), WS_CONV_TYPES):
            return dict(cfg, conv_cfg=None)
        return cfg

    return rewrite_dicts(node, replace)


def model_configs(args) -> dict:
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config {args.config!r} not found')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = cfg.model.to_dict()
    model['backbone']['init_cfg'] = None
    model['backbone']['depth'] = args.depth
    if args.depth < 50:
        model['neck']['in_channels'] = [64, 128, 256, 512]
    return {
        'BCN+WS': ConfigDict(model),
        'GN+WS': ConfigDict(replace_layers(model, ws_to_conv=False)),
        'GN': ConfigDict(replace_layers(model, ws_to_conv=True)),
    }, cfg.get('default_scope', 'mmdet')


def build(model_cfg: dict, scope: str, device: torch.device,
          update_rate: float, seed: int = 0):
    torch.manual_seed(seed)
    model = scoped_build(copy.deepcopy(model_cfg), scope).to(device)
    for m in model.modules():
        if isinstance(m, BatchChannelNorm) and m.estimate:
            m.update_rate = update_rate
    return model


COMPILED_PARTS = ('backbone', 'neck', 'rpn_head', 'roi_head')


def compiled_copy(model):
    """A copy of ``model`` whose :data:`COMPILED_PARTS` run under
    ``torch.compile`` (``nn.Module.compile``: in place, same state)."""
    model = copy.deepcopy(model)
    for name in COMPILED_PARTS:
        part = getattr(model, name, None)
        if part is not None:
            part.compile()
    return model


def demo_batch(args, num_classes: int):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(
        batch_size=1, image_shapes=[(3, *args.img_size)], num_items=[4],
        num_classes=num_classes, with_mask=True)


def train_step_fn(model, packed, lr: float):
    """One training iteration as mmengine runs it (SGD step included);
    gradients are released after it, as between iterations."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    calls = [0]

    def step():
        torch.manual_seed(calls[0])  # the same sampling for every model
        calls[0] += 1
        data = model.data_preprocessor(packed, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    return step


def infer_fn(model, packed):
    model.eval()
    data = model.data_preprocessor(packed, False)

    def infer():
        with torch.no_grad():
            model(data['inputs'], data['data_samples'], mode='tensor')

    return infer


def saved_in_forward(model, packed) -> int:
    model.train()
    torch.manual_seed(0)
    data = model.data_preprocessor(packed, True)
    with saved_bytes_counter() as saved:
        loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return saved['bytes']


def train_peak(model, packed, lr: float, device, warmup: int):
    step = train_step_fn(model, packed, lr)
    for _ in range(max(warmup, 1)):
        step()
    with peak_memory(device) as peak:
        step()
    return peak['bytes']


def memory_worker(spec: dict) -> None:
    args = parse_args(spec['argv'])
    torch.set_num_threads(spec['threads'])
    configs, scope = model_configs(args)
    model = build(configs[spec['variant']], scope, torch.device('cpu'),
                  args.update_rate)
    packed = demo_batch(args, model.roi_head.bbox_head.num_classes)
    print(json.dumps(dict(peak=train_peak(model, packed, args.lr,
                                          torch.device('cpu'),
                                          args.warmup))), flush=True)


def peak_in_subprocess(variant: str, argv, threads: int):
    items = run_memory_worker(
        __file__, dict(variant=variant, argv=list(argv), threads=threads))
    return items[-1]['peak']


# ------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='BCN+WS Mask R-CNN config')
    parser.add_argument('--img-size', type=int, nargs=2, default=[512, 512],
                        metavar=('H', 'W'))
    parser.add_argument('--depth', type=int, default=50,
                        choices=[18, 34, 50, 101])
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--lr', type=float, default=0.001)
    parser.add_argument('--update-rate', type=float, default=0.02,
                        help='Algorithm 1 rate of the BCN layers')
    parser.add_argument('--threads', type=int)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--compile', action='store_true',
                        help='also time BCN+WS and GN+WS under '
                        'torch.compile')
    parser.add_argument('--skip-train', action='store_true',
                        help='measure inference only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the BCN+WS config '
                        '(applied to every model)')
    add_output_options(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    started = begin(argv, parse_args, memory_worker)
    if started is None:  # a memory worker
        return {}
    argv, args, device, env = started
    env['config'] = args.config
    print(f'torch {env["torch"]}, {env["threads"]} threads, {device}, load '
          f'average {env["load_average"]}\nconfig: {env["config"]}',
          flush=True)
    configs, scope = model_configs(args)
    models = {name: build(cfg, scope, device, args.update_rate)
              for name, cfg in configs.items()}
    packed = demo_batch(args, models['GN'].roi_head.bbox_head.num_classes)
    results = {}

    if not args.skip_train:
        train = {name: train_step_fn(models[name], packed, args.lr)
                 for name in ('BCN+WS', 'GN+WS')}
        if args.compile:
            results['compile_first_iterations_s'] = {}
            for name in ('BCN+WS', 'GN+WS'):
                step = train_step_fn(compiled_copy(models[name]), packed,
                                     args.lr)
                first = []
                for _ in range(3):  # compiles, then recompiles once for
                    start = time.perf_counter()  # dynamic shapes
                    step()
                    first.append(time.perf_counter() - start)
                results['compile_first_iterations_s'][name] = first
                train[name + ' compiled'] = step
            print('first compiled iterations (s): '
                  f'{results["compile_first_iterations_s"]}', flush=True)
        times = interleaved(train, device, args.repeat, 0.0, args.warmup)
        results['train_rounds_s'] = times
        results['train_s'] = median_seconds(times)
        results['train_ratio'] = paired_ratio(times['BCN+WS'],
                                              times['GN+WS'])
        if args.compile:
            results['compiled_train_ratio'] = {
                'BCN+WS / GN+WS, both compiled': paired_ratio(
                    times['BCN+WS compiled'], times['GN+WS compiled']),
                'BCN+WS compiled / eager': paired_ratio(
                    times['BCN+WS compiled'], times['BCN+WS']),
                'GN+WS compiled / eager': paired_ratio(
                    times['GN+WS compiled'], times['GN+WS']),
            }
        print(f'train iteration: {results["train_s"]}', flush=True)

        results['saved_mib'] = {
            name: saved_in_forward(models[name], packed) / 2**20
            for name in ('BCN+WS', 'GN+WS')}
        results['saved_ratio'] = (results['saved_mib']['BCN+WS'] /
                                  results['saved_mib']['GN+WS'])
        if not args.no_memory:
            peaks = {}
            for name in ('BCN+WS', 'GN+WS'):
                if device.type == 'cpu':
                    peaks[name] = peak_in_subprocess(name, argv,
                                                     torch.get_num_threads())
                else:
                    peaks[name] = train_peak(models[name], packed, args.lr,
                                             device, args.warmup)
            results['peak_mib'] = {k: None if v is None else v / 2**20
                                   for k, v in peaks.items()}
            if None not in peaks.values():
                results['peak_ratio'] = peaks['BCN+WS'] / peaks['GN+WS']
            print(f'train peak: {results["peak_mib"]}', flush=True)

    folded = copy.deepcopy(models['BCN+WS']).eval()
    report = fold_bcn(folded)
    results['fold_report'] = report.to_dict()
    models['BCN+WS folded'] = folded
    with torch.no_grad():
        data = folded.data_preprocessor(packed, False)
        ref = models['BCN+WS'].eval().extract_feat(data['inputs'])
        got = folded.extract_feat(data['inputs'])
    results['folded_feature_rel_error'] = max(
        ((g - r).abs().max() / r.abs().max()).item()
        for g, r in zip(got, ref))
    infer = {name: infer_fn(m, packed) for name, m in models.items()}
    times = interleaved(infer, device, args.repeat, 0.0, args.warmup)
    results['infer_rounds_s'] = times
    results['infer_s'] = median_seconds(times)
    results['infer_ratio'] = {
        'BCN+WS / GN+WS': paired_ratio(times['BCN+WS'], times['GN+WS']),
        'BCN+WS folded / GN': paired_ratio(times['BCN+WS folded'],
                                           times['GN']),
        'BCN+WS folded / BCN+WS': paired_ratio(times['BCN+WS folded'],
                                               times['BCN+WS']),
        'GN+WS / GN': paired_ratio(times['GN+WS'], times['GN']),
    }
    env['load_average_after'] = load_average()

    r = results
    rows = []
    if 'train_s' in r:
        rows += [
            ['training iteration (s)', fmt(r['train_s']['BCN+WS'], 3),
             fmt(r['train_s']['GN+WS'], 3), fmt(r['train_ratio']), '-'],
            ['autograd saved in forward (MiB)',
             fmt(r['saved_mib']['BCN+WS'], 0),
             fmt(r['saved_mib']['GN+WS'], 0), fmt(r['saved_ratio']), '-'],
        ]
    if 'compiled_train_ratio' in r:
        ratios = r['compiled_train_ratio']
        rows += [
            ['training iteration (s), compiled',
             fmt(r['train_s']['BCN+WS compiled'], 3),
             fmt(r['train_s']['GN+WS compiled'], 3),
             fmt(ratios['BCN+WS / GN+WS, both compiled']), '<= 1.1'],
            ['training iteration, compiled / eager', '', '',
             f"{fmt(ratios['BCN+WS compiled / eager'])} / "
             f"{fmt(ratios['GN+WS compiled / eager'])}", '-'],
            ['first three compiled iterations (s)',
             ', '.join(fmt(t, 1) for t in
                       r['compile_first_iterations_s']['BCN+WS']),
             ', '.join(fmt(t, 1) for t in
                       r['compile_first_iterations_s']['GN+WS']), '', '-'],
        ]
    if 'peak_mib' in r:
        rows.append(['training-step peak memory (MiB)',
                     fmt(r['peak_mib']['BCN+WS'], 0),
                     fmt(r['peak_mib']['GN+WS'], 0),
                     fmt(r.get('peak_ratio')), '<= 1.05'])
    rows += [
        ['inference (s), unfolded', fmt(r['infer_s']['BCN+WS'], 3),
         fmt(r['infer_s']['GN+WS'], 3),
         fmt(r['infer_ratio']['BCN+WS / GN+WS']), '-'],
        ['inference (s), BCN+WS folded vs GN plain convs',
         fmt(r['infer_s']['BCN+WS folded'], 3), fmt(r['infer_s']['GN'], 3),
         fmt(r['infer_ratio']['BCN+WS folded / GN']), '<= 1.02'],
        ['inference, folded / unfolded BCN+WS', '', '',
         fmt(r['infer_ratio']['BCN+WS folded / BCN+WS']), '-'],
    ]
    text = '\n'.join([
        f'Mask R-CNN R-{args.depth}-FPN, 1 image of '
        f'{args.img_size[0]}x{args.img_size[1]}, {device}, float32, '
        f'{env["threads"]} threads, torch {env["torch"]}; ratios: median '
        f'over {args.repeat} interleaved rounds of the same-round ratio.',
        f'Folding: {len(report.folded)} BCN folded, '
        f'{len(report.unfoldable)} unfoldable; features of folded vs '
        f'unfolded: max relative error '
        f'{r["folded_feature_rel_error"]:.2g}.', '',
        markdown_table(['measure', 'BCN+WS', 'GN+WS (GN for folded)',
                        'ratio', 'target'], rows),
        f'\n`{env["command"]}`'
    ])
    return finish(args.out_dir, 'detection_step', env, results, text)


if __name__ == '__main__':
    reexec_with_timing_allocator()
    main()
