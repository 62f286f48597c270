"""Scoring a saved checkpoint on a split of its dataset, or of other data via overrides.

The data is built from the checkpoint's config with its recorded preprocessing (mean and std
from the run, not the other dataset's defaults) unless --set overrides them; a model whose
input does not match the data's images is one error naming both shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError
from cnnkit.infer.model import load_predictor
from cnnkit.tasks import main_logits
from cnnkit.training.trainer import prepare, resolve_device

TOP_K = 5  # top-5 accuracy is reported where there are more classes than this


def evaluate_checkpoint(path: str | Path, *, split: str = "val", overrides: tuple[str, ...] = ()
                        ) -> dict[str, Any]:
    """accuracy, loss and the task's own metrics; for classification also per-class accuracy,
    the confusion matrix (rows: true class, columns: predicted) and, past 5 classes, top-5
    accuracy."""
    predictor = load_predictor(path, overrides=overrides)
    cfg = predictor.cfg
    device = resolve_device(cfg.train.device)
    model, data, task = prepare(cfg, device, model=predictor.model,
                                splits=(split,))  # only the files of that split are read
    loader = data.loader(split, batch_size=cfg.train.batch_size, shuffle=False, seed=0,
                         device=device)
    classes = list(data.classes) if predictor.task == "classification" else None
    metrics, confusion, top_k = _score(model, loader, task, classes)
    others = {k: v for k, v in metrics.items() if k not in ("acc", "loss")}  # the task's own
    result = {"checkpoint": str(predictor.path), "split": split, "n": len(data.splits[split]),
              "accuracy": metrics["acc"], "loss": metrics["loss"], "weights": predictor.weights,
              **others}
    if classes is not None:
        if top_k is not None:
            result["top5_accuracy"] = top_k
        rows = confusion.sum(dim=1).clamp(min=1)
        result["per_class_accuracy"] = dict(zip(classes, (confusion.diag() / rows).tolist()))
        result["classes"] = classes
        result["confusion_matrix"] = confusion.tolist()
    return result


@torch.no_grad()
def _score(model, loader, task, classes: list[str] | None
           ) -> tuple[dict[str, float], torch.Tensor | None, float | None]:
    """One pass: the task's metrics, and for a classifier the confusion matrix (K, K) and the
    top-5 accuracy (None up to 5 classes)."""
    model.eval()
    k = len(classes) if classes is not None else 0
    totals, confusion, in_top = None, None, None
    for x, y in loader.batches(0):
        logits = main_logits(model(x))
        batch = task.stats(logits, y, task.loss(logits, y, training=False))
        totals = batch if totals is None else totals + batch
        if k:
            counts = torch.bincount(y * k + logits.argmax(dim=1), minlength=k * k).view(k, k)
            confusion = counts if confusion is None else confusion + counts
            if k > TOP_K:
                hits = (logits.topk(TOP_K, dim=1).indices == y[:, None]).any(dim=1).sum()
                in_top = hits if in_top is None else in_top + hits
    if totals is None:
        raise CnnkitError("eval: the split gave no batches (it is empty)")
    metrics = task.summarize(totals)
    if confusion is None:
        return metrics, None, None
    confusion = confusion.cpu()
    top_k = None if in_top is None else float(in_top) / max(int(confusion.sum()), 1)
    return metrics, confusion, top_k
