"""Optimizers and learning-rate schedules from the `train` section."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.freeze import param_groups
from cnnkit.schema import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = param_groups(model, cfg)  # trainable parameters only, by train.lr_groups
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule (cnnkit/schedules.py): optimizer step k runs at train.lr × f(k).

    f is a pure function of k, so the scheduler's state is its step count alone."""
    from cnnkit.training.schedules import lr_factor

    factor = lr_factor(cfg.schedule, lr=cfg.lr, steps_per_epoch=steps_per_epoch,
                       total_steps=cfg.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
