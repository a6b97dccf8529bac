# Copyright (c) mmbcn contributors. All rights reserved.
"""A small CPU training loop for the analysis experiments: SGD with
momentum and a cosine learning rate over in-memory tensors."""
import math
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``(x, y)``."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size])
        correct += (logits.argmax(1) == y[start:start + batch_size]).sum()
    model.train(was_training)
    return float(correct) / len(y)


def train(model: nn.Module,
          train_x: Tensor,
          train_y: Tensor,
          epochs: int,
          lr: float = 0.1,
          batch_size: int = 64,
          weight_decay: float = 5e-4,
          seed: int = 0,
          on_epoch: Optional[Callable[[int], None]] = None) -> List[float]:
    """Train ``model`` for ``epochs`` epochs; returns the mean training
    loss of each epoch (``nan`` from the first epoch whose loss is not
    finite, after which training stops). ``on_epoch(epoch)`` runs after
    every epoch (epoch counts from 1)."""
    if epochs <= 0:
        raise ValueError(f'epochs={epochs} must be positive')
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    total = epochs * steps_per_epoch
    losses = []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        epoch_loss = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue
            for group in optimizer.param_groups:
                group['lr'] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(index)
            step += 1
        epoch_loss /= len(train_y)
        if not math.isfinite(epoch_loss):
            losses.extend([math.nan] * (epochs - epoch + 1))
            break
        losses.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch)
    return losses
