"""The integer shift that best aligns segmentation predictions with their
ground truth: how far, and which way, predicted masks sit from the
labelled shapes."""
from typing import Dict, Iterable, Tuple

import numpy as np

Shift = Tuple[int, int]


def shifted_accuracy(pred: np.ndarray, gt: np.ndarray, dy: int, dx: int,
                     ignore: int) -> Tuple[int, int]:
    """(correct, counted) pixels when ``pred`` is moved ``dy`` pixels down
    and ``dx`` right; pixels labelled ``ignore`` or moved in from outside
    the image are not counted."""
    h, w = gt.shape
    # target rows/cols that a moved prediction covers
    ty = slice(max(dy, 0), h + min(dy, 0))
    tx = slice(max(dx, 0), w + min(dx, 0))
    sy = slice(max(-dy, 0), h + min(-dy, 0))
    sx = slice(max(-dx, 0), w + min(-dx, 0))
    target, moved = gt[ty, tx], pred[sy, sx]
    valid = target != ignore
    return int((moved[valid] == target[valid]).sum()), int(valid.sum())


def best_shift(pairs: Iterable[Tuple[np.ndarray, np.ndarray]], ignore: int,
               max_shift: int = 8) -> Tuple[Shift, Dict[Shift, float]]:
    """The shift (down, right) in ``[-max_shift, max_shift]^2`` that gives
    the predictions the highest pixel accuracy over all ``(prediction,
    ground truth)`` pairs, and the accuracy of every shift."""
    pairs = list(pairs)
    accuracy = {}
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            correct = counted = 0
            for pred, gt in pairs:
                c, n = shifted_accuracy(pred, gt, dy, dx, ignore)
                correct, counted = correct + c, counted + n
            accuracy[(dy, dx)] = correct / max(counted, 1)
    best = max(accuracy, key=lambda s: (accuracy[s], -abs(s[0]) - abs(s[1])))
    return best, accuracy
