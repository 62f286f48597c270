"""Scoring averaged probabilities: several checkpoints (`cnnkit eval A B C`), test-time
augmentation (`cnnkit eval --tta`), or both.

Each checkpoint scores every example of the split under each view (the image itself, then
small shifts and rotations); the softmax probabilities are averaged over views, then over
checkpoints, and the average is scored: accuracy and the negative log-likelihood. Each
checkpoint's own accuracy (on the plain images) is reported beside it, so the gain shows.
Classification only: a shifted canvas would move a localization box.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.infer.model import load_predictor
from cnnkit.tasks import main_logits
from cnnkit.training.trainer import prepare, resolve_device

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


def probabilities(model: torch.nn.Module, loader, *, tta: bool) -> torch.Tensor:
    """Softmax probabilities (N, K) over the loader's split, in order; averaged over VIEWS
    where `tta`."""
    views = VIEWS if tta else VIEWS[:1]
    out = []
    with torch.inference_mode():
        for x, _ in loader.batches(0):
            p = sum(F.softmax(main_logits(model(view(x, *v))).float(), dim=1) for v in views)
            out.append(p / len(views))
    return torch.cat(out)


def _member(path: str | Path, split: str, overrides: tuple[str, ...]):
    """(config, model on its device, data, task) of one checkpoint, through the one door
    (infer/model.py) that `cnnkit eval` uses."""
    predictor = load_predictor(path, overrides=overrides)
    cfg = predictor.cfg
    device = resolve_device(cfg.train.device)
    model, data, task = prepare(cfg, device, model=predictor.model, splits=(split,))
    if not task.class_targets or predictor.task != "classification":
        raise CnnkitError(f"{path}: averaged probabilities and --tta score classification; "
                          f"this checkpoint's task is {predictor.task}")
    if split not in data.splits:
        raise CnnkitError(f"{path}: split '{split}': its dataset has {', '.join(data.splits)}")
    return cfg, model.eval(), data, device


def evaluate_average(paths: list[str | Path], *, split: str = "val", tta: bool = False,
                     overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Accuracy and loss of the probabilities averaged over checkpoints (and TTA views); the
    checkpoints must score the same examples with the same classes."""
    total, labels, classes, members = None, None, None, []
    for path in paths:
        cfg, model, data, device = _member(path, split, overrides)
        y = data.splits[split].labels
        if labels is not None and (classes != list(data.classes) or not torch.equal(y, labels)):
            raise CnnkitError(f"{path}: its {split} split is not {paths[0]}'s (other examples "
                              f"or classes); averaged checkpoints must score the same data")
        labels, classes = y, list(data.classes)
        loader = data.loader(split, batch_size=cfg.train.batch_size, shuffle=False, seed=0,
                             device=device)
        plain = probabilities(model, loader, tta=False).cpu()
        members.append({"checkpoint": str(path), "accuracy": _accuracy(plain, y)})
        p = probabilities(model, loader, tta=True).cpu() if tta else plain
        total = p if total is None else total + p
    mean = total / len(paths)
    loss = F.nll_loss(mean.clamp_min(1e-12).log(), labels).item()
    return {"checkpoint": [str(p) for p in paths], "split": split, "n": len(labels),
            "accuracy": _accuracy(mean, labels), "loss": loss,
            "tta_views": len(VIEWS) if tta else 1, "members": members}


def _accuracy(p: torch.Tensor, labels: torch.Tensor) -> float:
    return (p.argmax(1) == labels).double().mean().item()
