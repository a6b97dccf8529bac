# Copyright (c) mmbcn contributors. All rights reserved.
"""The demo's pictures: ``curves.png`` (training loss and validation
metrics of every run) and ``predictions.png`` (every run's predictions on
the same validation images beside the ground truth)."""
import os.path as osp

from mmbcn.utils.atomic import atomic_outputs
from .tasks import TASKS
from .worker import SCORE_THR

COLOURS = {'bcn': 'tab:red', 'gn': 'tab:blue', 'bn': 'tab:green'}


def plot_curves(results, task: str, path: str) -> None:
    """Training loss and validation metrics against iteration, one
    colour per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    curves = TASKS[task]['curves']
    fig, axes = plt.subplots(
        1, 1 + len(curves), figsize=(4.6 * (1 + len(curves)), 3.6))
    for r in results:
        colour = COLOURS.get(r['run'], 'tab:gray')
        loss = np.asarray(r['loss'], dtype=float)
        steps = np.arange(1, len(loss) + 1)
        window = max(1, min(25, len(loss) // 10))
        smooth = np.convolve(loss, np.ones(window) / window, mode='valid')
        axes[0].plot(steps, loss, color=colour, alpha=0.15, lw=0.6)
        axes[0].plot(steps[window - 1:], smooth, color=colour, label=r['name'])
        for ax, (key, label) in zip(axes[1:], curves):
            points = r['history'].get(key, [])
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, 'o-', color=colour, label=r['name'])
            ax.set_title(f'validation {label}')
            ax.set_xlabel('iteration')
            ax.grid(alpha=0.3)
    axes[0].set_title('training loss' +
                      (f' ({window}-iteration mean)' if window > 1 else ''))
    axes[0].set_xlabel('iteration')
    axes[0].grid(alpha=0.3)
    for ax in axes:
        ax.legend()
    seed = results[0]['seed']
    fig.suptitle(
        f'{task}: same data, model, schedule and seed ({seed}); '
        'only the normalization differs',
        fontsize=10)
    save_figure(fig, path)


def _ground_truth_instances(ann_file: str):
    """img file name -> (labels, masks) from a COCO annotation file."""
    from pycocotools.coco import COCO
    coco = COCO(ann_file)
    out = {}
    for img_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        out[info['file_name']] = [(a['category_id'] - 1, a['bbox'],
                                   coco.annToMask(a).astype(bool))
                                  for a in anns]
    return out


def _draw_instances(ax, img, instances, classes, palette):
    import numpy as np
    from matplotlib.patches import Rectangle
    canvas = img.astype(float)
    for label, _, mask, _ in instances:
        colour = np.array(palette[label], dtype=float)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * colour
    ax.imshow(canvas.astype(np.uint8))
    for label, (x, y, w, h), _, score in instances:
        colour = np.array(palette[label]) / 255
        ax.add_patch(
            Rectangle((x, y), w, h, fill=False, lw=1.3, edgecolor=colour))
        text = classes[label] + ('' if score is None else f' {score:.2f}')
        ax.text(
            x,
            y - 1,
            text,
            fontsize=6,
            color='white',
            va='bottom',
            bbox=dict(facecolor=colour, alpha=0.8, pad=0.6, lw=0))


def plot_predictions(results, task: str, work_dir: str, path: str) -> None:
    """Each run's predictions (its predictions.npz) on the same validation
    images, beside the ground truth."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    preds = [
        np.load(osp.join(work_dir, r['run'], 'predictions.npz'))
        for r in results
    ]
    count = len({k.split('_')[0] for k in preds[0].files})
    cols = 1 + len(results)
    fig, axes = plt.subplots(
        count, cols, figsize=(2.6 * cols, 2.6 * count), squeeze=False)
    if task == 'detection':
        from mmbcn.datasets.coco_demo import CLASSES, ShapesCocoDataset
        palette = ShapesCocoDataset.METAINFO['palette']
        from mmengine.config import Config
        cfg = Config.fromfile(
            osp.join(work_dir, results[0]['run'], 'demo_config.py'))
        gt = _ground_truth_instances(cfg.val_evaluator.ann_file)
    else:
        from mmbcn.datasets.voc_demo import CLASSES
        from mmbcn.datasets.voc_demo import PALETTE as palette
    for i in range(count):
        img_path = str(preds[0][f'{i}_path'])
        img = np.asarray(Image.open(img_path).convert('RGB'))
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if task == 'detection':
                if j == 0:
                    inst = [(lab, box, m, None)
                            for lab, box, m in gt[osp.basename(img_path)]]
                else:
                    p = preds[j - 1]
                    inst = [(int(lab), (b[0], b[1], b[2] - b[0], b[3] - b[1]),
                             m, float(s)) for lab, b, m, s in zip(
                                 p[f'{i}_labels'], p[f'{i}_bboxes'],
                                 p[f'{i}_masks'], p[f'{i}_scores'])]
                _draw_instances(ax, img, inst, CLASSES, palette)
            else:
                if j == 0:
                    seg = np.asarray(
                        Image.open(str(preds[0][f'{i}_seg_path'])))
                else:
                    seg = preds[j - 1][f'{i}_seg']
                colours = np.zeros((256, 3))
                colours[:len(palette)] = palette
                colours[255] = (255, 255, 255)
                blend = 0.4 * img + 0.6 * colours[seg]
                blend[seg == 0] = img[seg == 0]
                ax.imshow(blend.astype(np.uint8))
            if i == 0:
                ax.set_title(
                    'ground truth' if j == 0 else results[j - 1]['name'],
                    fontsize=9)
    what = (f'detections with score >= {SCORE_THR}'
            if task == 'detection' else 'predicted classes')
    fig.suptitle(f'validation images: {what}', fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_outputs(path) as (tmp, ):
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)
