"""An exponential moving average (EMA) of a model's weights, updated after every optimizer step.

    ema ← d × ema + (1 − d) × weights,   d = min(decay, (1 + t) / (10 + t)) at update t = 1, 2, …

The ramp on d (TensorFlow's ExponentialMovingAverage with num_updates, timm's warmup) keeps the
first updates from being dominated by the random initial weights. Floating-point buffers
(BatchNorm's running mean and variance) are averaged the same way; integer ones (batch counts)
are copied. The average is a second module of the same class, evaluated on its own.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, *, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in; no host sync (foreach ops on the device)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        averaged, copied = _split(self.module), _split(model)
        if averaged[0]:
            torch._foreach_lerp_(averaged[0], copied[0], weight)
        for ema_t, t in zip(averaged[1], copied[1]):
            ema_t.copy_(t)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])


def build_ema(model: nn.Module, *, decay: float) -> EMA | None:
    """The average for train.ema_decay, or None when it is 0 (off)."""
    return EMA(model, decay=decay) if decay else None


def _split(module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The module's parameters and buffers: (floating point, the rest), in a fixed order."""
    tensors = [*module.parameters(), *module.buffers()]
    return ([t for t in tensors if t.is_floating_point()],
            [t for t in tensors if not t.is_floating_point()])
