"""Divergence guards for the training loop: a NaN/inf loss stops the run with its step and
value, and gradients can be clipped by their global norm.

The watch keeps its record on the device, so it adds no host sync per step; `check()` is the
sync, and the loop calls it before every save, at the end of an epoch, and every
`check_every` steps (every step on the CPU, where a sync is free).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cnnkit.errors import DivergenceError


class FiniteWatch:
    """Remembers the first step whose loss was not finite, and its value, on the device."""

    def __init__(self, device: torch.device, *, epoch: int, check_every: int):
        self.epoch = epoch
        self.check_every = check_every
        self.first_step = torch.full((), -1.0, dtype=torch.float64, device=device)
        self.value = torch.zeros((), dtype=torch.float64, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Record `loss` of batch `step` (0-based within the epoch); checks when due."""
        loss = loss.detach().double()
        new = ~torch.isfinite(loss) & (self.first_step < 0)
        self.first_step = torch.where(new, float(step), self.first_step)
        self.value = torch.where(new, loss, self.value)
        if (step + 1) % self.check_every == 0:
            self.check()

    def check(self) -> None:
        step, value = int(self.first_step.item()), self.value.item()
        if step >= 0:
            raise DivergenceError(
                f"train loss became {value} at epoch {self.epoch + 1}, step {step + 1}: stopped "
                f"without saving, the last checkpoint is unchanged (lower train.lr or set "
                f"train.grad_clip)")


def check_every_for(device: torch.device, log_every: int) -> int:
    """How often the watch syncs: every step on the CPU, else with the progress bar."""
    return 1 if device.type == "cpu" else max(1, log_every)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float | None) -> None:
    """Scale all gradients together so their L2 norm is at most `max_norm` (None: no-op)."""
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
