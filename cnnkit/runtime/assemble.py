"""A config's model, data and task, assembled on a device and checked against each other before
any step: what `train()` starts from and what `cnnkit eval` scores a checkpoint with."""

from __future__ import annotations

import random
import sys

import numpy as np
import torch

from cnnkit.data import Data, build_data
from cnnkit.data.checks import check_splits
from cnnkit.errors import ConfigError
from cnnkit.models.builder import Network, build_network, check_val_crop
from cnnkit.schema import Config
from cnnkit.tasks import Task, build_task


def resolve_device(name: str, *, key: str = "train.device", fallback: str | None = None
                   ) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; a named device must exist. `key` is what the
    user wrote it as, for the error (`--device` on the command line). `fallback`: where a
    named device is missing, use the best there is and print a note naming `fallback` (a
    checkpoint trained on cuda is evaluated on this machine's device)."""
    if fallback is not None:
        try:
            return resolve_device(name, key=key)
        except ConfigError:
            device = resolve_device("auto")
            print(f"cnnkit: note: {fallback} says {key} {name}, which this machine lacks; "
                  f"using {device.type}", file=sys.stderr)
            return device
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: expected auto, cpu, cuda, cuda:N or mps, "
                          f"found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name} asked for, but torch sees no CUDA device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {name} asked for, but torch sees "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps and mps.is_available()):
        raise ConfigError(f"{key}: {name} asked for, but torch sees no MPS device (Apple "
                          f"silicon with a torch built for it)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{key}: expected auto, cpu, cuda, cuda:N or mps, found {name!r}")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def assemble(cfg: Config, device: torch.device, *, model: Network | None = None,
             data: Data | None = None, splits: tuple[str, ...] | None = None
             ) -> tuple[Network, Data, Task]:
    """Model and data for a config, checked against each other before any step; `model`, when
    given, is the config's model already built (with a checkpoint's weights, say), `data` the
    config's data already built; `splits` the ones used (None: all, training among them)."""
    if data is None:
        data = build_data(cfg.data, source=cfg.source, splits=splits)
    task = build_task(cfg)
    check_splits(data.splits, num_classes=len(data.classes),
                 where=f"{cfg.source}: data ({cfg.data.name})", class_targets=task.class_targets,
                 required=splits or ("train",))
    model = build_network(cfg) if model is None else model
    if model.input_shape[0] != data.input_shape[0]:
        raise ConfigError(f"{cfg.source}: model.input: the model's first layer takes "
                          f"{model.input_shape[0]} input channels, but {cfg.data.name}'s images "
                          f"have {data.input_shape[0]}")
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise ConfigError(f"{cfg.source}: model.input: the model takes "
                          f"{list(model.input_shape)}, but {cfg.data.name} gives "
                          f"{list(data.input_shape)}")
    task.check(model.output_shape, len(data.classes), source=cfg.source)
    check_val_crop(cfg, model)  # FixRes: the model must take the evaluation crop too
    return model.to(device), data, task
