"""Scoring a saved checkpoint on a split of its dataset, or of other data via overrides.

The data is built from the checkpoint's config with its recorded preprocessing (mean and std
from the run, not the other dataset's defaults) unless --set overrides them; a model whose
input does not match the data's images is one error naming both shapes. The pass is the
training loop's validation (cnnkit/runtime/evaluate.py), under the run's precision and memory
format, so a run's last val_* numbers and `cnnkit eval` of its best.pt agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.data import Data
from cnnkit.infer.model import load_predictor
from cnnkit.infer.predict import Predictor
from cnnkit.runtime.assemble import assemble, resolve_device
from cnnkit.runtime.evaluate import Evaluation, View, evaluate
from cnnkit.runtime.speed import prepare_model, resolve_speed


def evaluate_checkpoint(path: str | Path, *, split: str = "val", overrides: tuple[str, ...] = ()
                        ) -> dict[str, Any]:
    """accuracy, loss and the task's own metrics; for a task with class targets also per-class
    accuracy, the confusion matrix (rows: true class, columns: predicted) and, past 5 classes,
    top-5 accuracy."""
    predictor = load_predictor(path, overrides=overrides)
    scores, data = score(predictor, split, confusion=predictor.task.class_targets)
    metrics = scores.metrics
    others = {k: v for k, v in metrics.items() if k not in ("acc", "loss")}  # the task's own
    result = {"checkpoint": str(predictor.path), "split": split, "n": len(data.splits[split]),
              "accuracy": metrics["acc"], "loss": metrics["loss"], "weights": predictor.weights,
              **others}
    if scores.confusion is not None:
        classes, confusion = list(data.classes), scores.confusion
        if scores.top_k is not None:
            result["top5_accuracy"] = scores.top_k
        counts = confusion.double()  # float64: 99 of 100 is 0.99, not float32's 0.9900000095
        rows = counts.sum(dim=1).clamp(min=1)
        result["per_class_accuracy"] = dict(zip(classes, (counts.diag() / rows).tolist()))
        result["classes"] = classes
        result["confusion_matrix"] = confusion.tolist()
    return result


def score(predictor: Predictor, split: str, *, confusion: bool = False,
          probabilities: bool = False, views: tuple[View, ...] = ()
          ) -> tuple[Evaluation, Data]:
    """(Evaluation, Data): the predictor's model on `split` of its config's data, on the
    config's device, precision and memory format, as the training loop validates."""
    cfg = predictor.cfg
    device = resolve_device(cfg.train.device, fallback=str(predictor.path))
    # only the files of that split are read
    model, data, task = assemble(cfg, device, model=predictor.model, splits=(split,))
    speed = resolve_speed(device, precision=cfg.train.precision,
                          channels_last=cfg.train.channels_last, model=model)
    prepare_model(model, speed)
    loader = data.loader(split, batch_size=cfg.train.batch_size, shuffle=False,
                         seed=cfg.train.seed, device=device)
    return evaluate(model, loader, task, speed=speed, split=split, confusion=confusion,
                    probabilities=probabilities, views=views), data
