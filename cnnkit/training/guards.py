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

# the baseline's floor: a first loss below it (a model that starts nearly trained) is compared
# as this, so that ordinary noise around a loss of 1e-5 is not "orders of magnitude"
BASELINE_FLOOR = 1e-2


class FiniteWatch:
    """Remembers, on the device, the first step whose loss was not finite, or whose running
    loss grew past `factor` times the loss of the run's first step (`baseline`, carried from
    epoch to epoch): a run that diverges without reaching inf (SGD or Adam at a huge rate)
    stops as a NaN does, however soon it blows up.

    The first step's loss is the model's before any update: whatever the task, label
    smoothing or class weights, it is the scale the loss starts from, and a run stuck at
    chance stays near it. The running loss is the mean of the steps so far in the current
    window of `window` steps, so it is compared from the first step on."""

    def __init__(self, device: torch.device, *, epoch: int, check_every: int, window: int = 20,
                 factor: float | None = None, baseline: torch.Tensor | None = None):
        self.epoch, self.check_every, self.window, self.factor = epoch, check_every, window, factor
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.first_step = zero - 1.0
        self.value = zero
        self.grew = torch.zeros((), dtype=torch.bool, device=device)
        self.baseline = zero - 1.0 if baseline is None else baseline  # < 0: not yet measured
        self._sum, self._count = zero, 0

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Record `loss` of batch `step` (0-based within the epoch); checks when due."""
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        self._flag(~finite, loss, step, grew=False)
        if self.factor is not None:
            # the first finite loss seen sets the baseline (a NaN was flagged above)
            first = (self.baseline < 0) & finite
            self.baseline = torch.where(first, loss.clamp(min=BASELINE_FLOOR), self.baseline)
            self._sum, self._count = self._sum + loss, self._count + 1
            mean = self._sum / self._count  # host arithmetic decides when; the device compares
            measured = self.baseline > 0
            self._flag(measured & (mean > self.factor * self.baseline), mean, step, grew=True)
            if self._count == self.window:
                self._sum, self._count = torch.zeros_like(self._sum), 0
        if (step + 1) % self.check_every == 0:
            self.check()

    def _flag(self, bad: torch.Tensor, value: torch.Tensor, step: int, *, grew: bool) -> None:
        new = bad & (self.first_step < 0)
        self.first_step = torch.where(new, float(step), self.first_step)
        self.value = torch.where(new, value, self.value)
        self.grew = torch.where(new, grew, self.grew)

    def check(self) -> None:
        step, value = int(self.first_step.item()), self.value.item()
        if step < 0:
            return
        where = f"at epoch {self.epoch + 1}, step {step + 1}"
        if bool(self.grew.item()):
            raise DivergenceError(
                f"train loss diverged {where}: its running mean (up to {self.window} steps) "
                f"reached {value:.4g}, past train.diverge_factor {self.factor:g} times its "
                f"first step's loss ({self.baseline.item():.4g}); stopped without saving")
        raise DivergenceError(
            f"train loss became {value} {where}: stopped without saving")


def check_every_for(device: torch.device, log_every: int) -> int:
    """How often the watch syncs: every step on the CPU, else with the progress bar."""
    return 1 if device.type == "cpu" else max(1, log_every)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float | None) -> None:
    """Scale all gradients together so their L2 norm is at most `max_norm` (None: no-op)."""
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
