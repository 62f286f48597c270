"""Scoring a saved checkpoint on a split of its dataset, or of other data via overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnkit.builder import Network, build_model
from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import Config, apply_override, config_from_dict
from cnnkit.ema import inference_weights
from cnnkit.errors import CheckpointError
from cnnkit.trainer import evaluate, prepare, resolve_device


def config_of_checkpoint(checkpoint: dict, path: str | Path, overrides: tuple[str, ...] = ()
                         ) -> Config:
    raw = checkpoint.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds no config; it can only be used as weights")
    for item in overrides:
        apply_override(raw, item, source=str(path))
    return config_from_dict(raw, source=str(path))


def model_of_checkpoint(checkpoint: dict, path: str | Path, cfg: Config) -> Network:
    """The model `cfg` describes holding the checkpoint's weights (the EMA's where it has one),
    on the CPU in eval mode. Built on the meta device, then given the checkpoint's tensors: no
    time or memory goes to an init they would overwrite (seconds for VGG's 143 M parameters)."""
    with torch.device("meta"):
        model = build_model(cfg)
    try:
        model.load_state_dict(inference_weights(checkpoint)[0], assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise CheckpointError(f"{path}: the model has tensors its checkpoint does not hold")
    return model.eval()


def evaluate_checkpoint(path: str | Path, *, split: str = "val", overrides: tuple[str, ...] = ()
                        ) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    cfg = config_of_checkpoint(checkpoint, path, overrides)
    device = resolve_device(cfg.train.device)
    model, data, task = prepare(cfg, device, model=model_of_checkpoint(checkpoint, path, cfg))
    kind = inference_weights(checkpoint)[1]
    loader = data.loader(split, batch_size=cfg.train.batch_size, shuffle=False, seed=0,
                         device=device)
    metrics = evaluate(model, loader, task)
    others = {k: v for k, v in metrics.items() if k not in ("acc", "loss")}  # the task's own
    return {"checkpoint": str(path), "split": split, "n": len(data.splits[split]),
            "accuracy": metrics["acc"], "loss": metrics["loss"], "weights": kind, **others}
