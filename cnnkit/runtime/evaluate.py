"""The one evaluation pass: the epoch loop's validation, `cnnkit eval`, ensembles and TTA all
score through `evaluate`, under the same autocast and memory format (`Speed`), so a run's
final validation and `cnnkit eval` of its best.pt print the same numbers.

The task's metrics add up on the device (`task.stats`); a task with class targets also gets a
confusion matrix and top-5 accuracy when asked (`confusion=True`), and its class
probabilities per example, in order, when asked (`probabilities=True`, averaged over `views`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from cnnkit.errors import CnnkitError
from cnnkit.runtime.speed import Speed
from cnnkit.tasks import Task, main_logits

TOP_K = 5  # top-5 accuracy is reported where there are more classes than this
View = Callable[[torch.Tensor], torch.Tensor]  # a batch (B, C, H, W) -> the same batch changed


@dataclass
class Evaluation:
    metrics: dict[str, float]  # the task's summary: loss, acc and the task's own
    confusion: torch.Tensor | None = None  # (K, K) on the CPU; rows true, columns predicted
    top_k: float | None = None  # top-5 accuracy, past TOP_K classes
    probabilities: torch.Tensor | None = None  # (N, K) on the CPU, averaged over the views
    targets: torch.Tensor | None = None  # (N,) the class of each example, on the CPU


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Task, *, speed: Speed | None = None,
             reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, split: str = "val",
             confusion: bool = False, probabilities: bool = False,
             views: Sequence[View] = (), bar: bool = False) -> Evaluation:
    """One pass over `loader` (the split named `split`). `reduce` sums the metric totals over
    processes (torchrun); `views` are extra looks at each batch (TTA) whose probabilities are
    averaged with the plain one's. The task's metrics score the plain images. `bar`: a
    progress bar on stderr where it is a terminal (it reads nothing from the device)."""
    speed = speed or Speed.plain(next(model.parameters()).device)
    model.eval()
    totals, counts, in_top, probs, targets = None, None, None, [], []
    progress = tqdm(total=len(loader) if hasattr(loader, "__len__") else None, desc=split,
                    leave=False, unit="batch", disable=not bar or not sys.stderr.isatty())
    for x, y in loader.batches(0):
        progress.update(1)
        with speed.autocast():
            logits = main_logits(model(speed.inputs(x)))
            batch = task.stats(logits, y, task.loss(logits, y, training=False))
        totals = batch if totals is None else totals + batch
        if confusion:
            counts, in_top = _confusion(task.class_scores(logits), y, counts, in_top)
        if probabilities:
            probs.append(_probabilities(model, x, logits, task, speed, views).cpu())
            targets.append(y.cpu())
    progress.close()
    if totals is None:
        raise CnnkitError(f"evaluate: split '{split}' gave no batches (it is empty, or holds "
                          f"fewer examples than there are ranks)")
    totals = reduce(totals) if reduce is not None else totals
    result = Evaluation(task.summarize(totals))
    if counts is not None:
        result.confusion = counts.cpu()
        n = max(int(result.confusion.sum()), 1)
        result.top_k = None if in_top is None else float(in_top) / n
    if probabilities:
        result.probabilities, result.targets = torch.cat(probs), torch.cat(targets)
    return result


def _confusion(scores: torch.Tensor, y: torch.Tensor, counts: torch.Tensor | None,
               in_top: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's (K, K) counts and top-5 hits added to the sums so far (on the device)."""
    k = scores.shape[1]
    batch = torch.bincount(y * k + scores.argmax(dim=1), minlength=k * k).view(k, k)
    counts = batch if counts is None else counts + batch
    if k > TOP_K:
        hits = (scores.topk(TOP_K, dim=1).indices == y[:, None]).any(dim=1).sum()
        in_top = hits if in_top is None else in_top + hits
    return counts, in_top


def _probabilities(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, task: Task,
                   speed: Speed, views: Sequence[View]) -> torch.Tensor:
    """(B, K) float32 class probabilities, averaged over the plain batch and each view."""
    total = task.probabilities(logits)
    for view in views:
        with speed.autocast():
            total = total + task.probabilities(main_logits(model(speed.inputs(view(x)))))
    return total / (1 + len(views))
