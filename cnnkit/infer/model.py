"""A checkpoint turned back into what made it: its config, its model with the checkpoint's
weights, its class names. evaluate, predict, locate and visualize all come through here."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import apply_override, config_from_dict
from cnnkit.errors import CheckpointError
from cnnkit.models.builder import Network, build_model
from cnnkit.schema import Config
from cnnkit.training.ema import inference_weights


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


def load_model(path: str | Path, *, device: torch.device, checkpoint: dict | None = None
               ) -> tuple[nn.Module, Config, list[str]]:
    """The checkpoint's model in eval mode on `device`, its config and its class names."""
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    cfg = config_of_checkpoint(checkpoint, path)
    model = model_of_checkpoint(checkpoint, path, cfg)
    classes = checkpoint.get("classes") or [str(k) for k in range(model.output_shape[0])]
    return model.to(device).eval(), cfg, list(classes)
