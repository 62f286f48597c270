"""Scoring a saved checkpoint on a split of its dataset, or of other data via overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.checkpoint import load_checkpoint
from cnnkit.infer.model import config_of_checkpoint, model_of_checkpoint
from cnnkit.training.ema import inference_weights
from cnnkit.training.trainer import evaluate, prepare, resolve_device


def evaluate_checkpoint(path: str | Path, *, split: str = "val", overrides: tuple[str, ...] = ()
                        ) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    cfg = config_of_checkpoint(checkpoint, path, overrides)
    device = resolve_device(cfg.train.device)
    model, data, task = prepare(cfg, device, model=model_of_checkpoint(checkpoint, path, cfg),
                                splits=(split,))  # only the files of that split are read
    kind = inference_weights(checkpoint)[1]
    loader = data.loader(split, batch_size=cfg.train.batch_size, shuffle=False, seed=0,
                         device=device)
    metrics = evaluate(model, loader, task, split=split)
    others = {k: v for k, v in metrics.items() if k not in ("acc", "loss")}  # the task's own
    return {"checkpoint": str(path), "split": split, "n": len(data.splits[split]),
            "accuracy": metrics["acc"], "loss": metrics["loss"], "weights": kind, **others}
