"""Scoring averaged probabilities: several checkpoints (`cnnkit eval A B C`), test-time
augmentation (`cnnkit eval --tta`), or both.

Each checkpoint scores every example of the split under each view (the image itself, then
small shifts and rotations) in the one evaluation pass (cnnkit/runtime/evaluate.py, the
training loop's, with its precision); the softmax probabilities are averaged over views, then
over checkpoints, and the average is scored: accuracy and the negative log-likelihood. Each
checkpoint's own accuracy (on the plain images) is reported beside it, so the gain shows.
Tasks with class targets only: a shifted canvas would move a localization box.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.infer.evaluate import score
from cnnkit.infer.model import load_predictor

# (dx, dy) pixels, degrees: the plain image, one-pixel shifts either way on each axis, ±8°.
# Small enough that a digit stays the same digit (no flips: a mirrored 2 is no 2).
VIEWS = ((0, 0, 0.0), (1, 0, 0.0), (-1, 0, 0.0), (0, 1, 0.0), (0, -1, 0.0), (0, 0, 8.0),
         (0, 0, -8.0))


def view(x: torch.Tensor, dx: int, dy: int, degrees: float) -> torch.Tensor:
    """Batch x (B, C, H, W) shifted by (dx, dy) px and rotated by `degrees` about the centre,
    the border pixels repeated into what comes into view (the background, for digits)."""
    if (dx, dy, degrees) == (0, 0, 0.0):
        return x
    b, _, h, w = x.shape
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # output -> input in [-1, 1] coordinates: a shift of +dx px reads from dx px to the left
    theta = torch.tensor([[cos, -sin * h / w, -2 * dx / w], [sin * w / h, cos, -2 * dy / h]],
                         dtype=x.dtype, device=x.device).expand(b, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def evaluate_average(paths: list[str | Path], *, split: str = "val", tta: bool = False,
                     overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Accuracy and loss of the probabilities averaged over checkpoints (and TTA views); the
    checkpoints must score the same examples with the same classes."""
    views = tuple(partial(view, dx=dx, dy=dy, degrees=d) for dx, dy, d in VIEWS[1:]) \
        if tta else ()
    total, labels, classes, members = None, None, None, []
    for path in paths:
        predictor = load_predictor(path, overrides=overrides)
        if not predictor.task.class_targets:
            raise CnnkitError(f"{path}: averaged probabilities and --tta score classification; "
                              f"this checkpoint's task is {predictor.task.name}")
        scores, data = score(predictor, split, probabilities=True, views=views)
        y = scores.targets
        if labels is not None and (classes != list(data.classes) or not torch.equal(y, labels)):
            raise CnnkitError(f"{path}: its {split} split is not {paths[0]}'s (other examples "
                              f"or classes); averaged checkpoints must score the same data")
        labels, classes = y, list(data.classes)
        # the task's accuracy scores the plain images, so the gain of TTA shows beside it
        members.append({"checkpoint": str(path), "accuracy": scores.metrics["acc"]})
        p = scores.probabilities
        total = p if total is None else total + p
    mean = total / len(paths)
    loss = F.nll_loss(mean.clamp_min(1e-12).log(), labels).item()
    return {"checkpoint": [str(p) for p in paths], "split": split, "n": len(labels),
            "accuracy": _accuracy(mean, labels), "loss": loss,
            "tta_views": len(VIEWS) if tta else 1, "members": members}


def _accuracy(p: torch.Tensor, labels: torch.Tensor) -> float:
    return (p.argmax(1) == labels).double().mean().item()
