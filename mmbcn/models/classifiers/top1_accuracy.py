# Copyright (c) mmbcn contributors. All rights reserved.
"""Top-1 accuracy of a classifier's predictions."""
from typing import Any, Sequence

from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


@METRICS.register_module()
class Top1Accuracy(BaseMetric):
    """The percentage of images whose predicted class is the true one,
    reported as ``accuracy/top1`` (mmpretrain's name).

    Reads the ``dict(pred_label, gt_label)`` predictions of
    :class:`~mmbcn.models.classifiers.BackboneClassifier`.
    """

    default_prefix = 'accuracy'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(
                int(sample['pred_label']) == int(sample['gt_label']))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            raise ValueError('Top1Accuracy: no predictions to score')
        return dict(top1=100.0 * sum(results) / len(results))
