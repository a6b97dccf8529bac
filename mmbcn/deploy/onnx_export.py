# Copyright (c) mmbcn contributors. All rights reserved.
"""Export a folded model to ONNX and check it with onnxruntime
(``tools/deploy/export_onnx.py``).

What is exported (:func:`export_target`):

* segmentors (mmseg ``EncoderDecoder``): the whole model, image to
  per-class logits at the input's size (``encode_decode``; the class map
  is their argmax);
* detectors: ``backbone + neck`` and, for two-stage detectors, the RPN
  head's score and box maps. Proposal generation, RoIAlign and NMS are
  mmcv ops that ``torch.onnx`` cannot express without mmdeploy's
  rewriters, so the rest of the detector stays in PyTorch.

The exporter is ``torch.onnx.export(..., dynamo=False)`` (TorchScript
tracing, opset 17): the dynamo-based exporter needs ``onnxscript``, which
the ``deploy`` extra does not install. Height and width are dynamic axes.
"""
import dataclasses
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

OPSET = 17


class SegmentorLogits(nn.Module):
    """An mmseg segmentor as ``image -> logits`` at the image's size."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: Tensor) -> Tensor:
        meta = dict(img_shape=tuple(x.shape[2:]),
                    ori_shape=tuple(x.shape[2:]),
                    pad_shape=tuple(x.shape[2:]))
        return self.segmentor.encode_decode(x, [meta] * x.shape[0])


class DetectorFeatures(nn.Module):
    """A detector's backbone and neck (and its RPN head's outputs)."""

    def __init__(self, detector: nn.Module, with_rpn: bool):
        super().__init__()
        self.detector = detector
        self.with_rpn = with_rpn

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        feats = tuple(self.detector.extract_feat(x))
        if not self.with_rpn:
            return feats
        scores, deltas = self.detector.rpn_head(feats)
        return feats + tuple(scores) + tuple(deltas)


def export_target(model: nn.Module) -> Tuple[nn.Module, str]:
    """``(module, description)`` of what gets exported from ``model``."""
    if hasattr(model, 'encode_decode') and hasattr(model, 'decode_head'):
        return SegmentorLogits(model), 'whole segmentor (logits)'
    if hasattr(model, 'extract_feat'):
        with_rpn = getattr(model, 'rpn_head', None) is not None
        what = 'backbone + neck' + (' + RPN head' if with_rpn else '')
        return DetectorFeatures(model, with_rpn), what
    raise TypeError(f'{type(model).__name__}: neither an mmseg segmentor '
                    '(encode_decode) nor an mmdet detector (extract_feat)')


def output_names(module: nn.Module, count: int) -> List[str]:
    """Names of the ``count`` outputs of an :func:`export_target` module."""
    if isinstance(module, SegmentorLogits):
        return ['seg_logits']
    if isinstance(module, DetectorFeatures) and module.with_rpn:
        levels = count // 3
        return ([f'feat{i}' for i in range(levels)] +
                [f'rpn_cls{i}' for i in range(levels)] +
                [f'rpn_bbox{i}' for i in range(levels)])
    return [f'feat{i}' for i in range(count)]


def export(module: nn.Module, x: Tensor, path: str,
           output_names: Sequence[str]) -> None:
    """Write ``module`` (eval mode) traced on ``x`` to ``path``."""
    dynamic = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    with torch.no_grad():
        torch.onnx.export(
            module, (x, ),
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=['input'],
            output_names=list(output_names) or None,
            dynamic_axes=dynamic,
            do_constant_folding=True)


def run_onnxruntime(path: str, x: Tensor) -> List[Tensor]:
    """The outputs of the ONNX file at ``path`` on ``x`` (onnxruntime, CPU)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(out)
            for out in session.run(None, {name: x.numpy()})]


def flat_tensors(out) -> List[Tensor]:
    """Tensors of a (nested) output, in order."""
    if isinstance(out, Tensor):
        return [out]
    return [t for item in out for t in flat_tensors(item)]


@dataclasses.dataclass
class Comparison:
    """Largest differences of ``got`` against ``want`` over all outputs:
    ``max_abs`` = max |got - want|; ``max_rel`` = the largest, over the
    outputs, of max |got - want| / max |want|."""
    max_abs: float
    max_rel: float
    outputs: int

    def __str__(self) -> str:
        return (f'max abs error {self.max_abs:.3g}, max rel error '
                f'{self.max_rel:.3g} over {self.outputs} outputs')


def compare(got: Sequence[Tensor], want: Sequence[Tensor]) -> Comparison:
    if len(got) != len(want):
        raise RuntimeError(f'{len(got)} outputs vs {len(want)} expected')
    max_abs = max_rel = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        if tuple(g.shape) != tuple(w.shape):
            raise RuntimeError(f'output {i}: shape {tuple(g.shape)} vs '
                               f'{tuple(w.shape)} expected')
        diff = (g.double() - w.double()).abs().max().item()
        scale = w.double().abs().max().item()
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return Comparison(max_abs, max_rel, len(want))
