"""What is learned: the loss and the metrics, accumulated on the device (no host syncs)."""

from __future__ import annotations

import difflib
from typing import Protocol

import torch
import torch.nn.functional as F

from cnnkit.builder import NetworkOutput
from cnnkit.config import Config
from cnnkit.errors import ConfigError


class Task(Protocol):
    """What the trainer asks of a task. `metrics` names what `summarize` returns; the trainer
    writes each as train_NAME and val_NAME in metrics.csv, and the curves plot each."""

    metrics: tuple[str, ...]
    class_targets: bool  # targets are one class index per example (checked before training)

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None: ...

    def loss(self, output: torch.Tensor | NetworkOutput, target: torch.Tensor, *,
             training: bool = True) -> torch.Tensor:
        """training=False: the plain loss, without training-only terms (label smoothing)."""

    def stats(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor
              ) -> torch.Tensor: ...

    def summarize(self, totals: torch.Tensor) -> dict[str, float]: ...


class Classification:
    """Cross-entropy on logits; accuracy. Auxiliary heads add `aux_weight` × their loss.

    `label_smoothing` (0 to 1) softens the training targets only: validation losses are plain
    cross-entropy (training=False), so they compare across runs."""

    metrics = ("loss", "acc")
    class_targets = True

    def __init__(self, *, aux_weight: float = 0.3, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing: expected a fraction in [0, 1), "
                              f"found {label_smoothing}")
        self.aux_weight = aux_weight
        self.label_smoothing = label_smoothing

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None:
        if output_shape != (num_classes,):
            raise ConfigError(f"{source}: model.layers: the model outputs "
                              f"{'×'.join(map(str, output_shape))} values per example, but the "
                              f"dataset has {num_classes} classes")

    def loss(self, output: torch.Tensor | NetworkOutput, target: torch.Tensor, *,
             training: bool = True) -> torch.Tensor:
        smoothing = self.label_smoothing if training else 0.0
        if isinstance(output, NetworkOutput):
            main = F.cross_entropy(output.logits, target, label_smoothing=smoothing)
            return main + self.aux_weight * sum(
                F.cross_entropy(a, target, label_smoothing=smoothing) for a in output.aux)
        return F.cross_entropy(output, target, label_smoothing=smoothing)

    def stats(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """[loss sum, correct, count] for one batch, as a float64 device tensor to add up."""
        n = target.shape[0]
        correct = (logits.argmax(dim=1) == target).sum()
        # new_full is a fill kernel on the device; torch.tensor(n, device=cuda) would be a
        # blocking host-to-device copy, i.e. a host sync every step
        return torch.stack([loss.detach().double() * n, correct.double(),
                            target.new_full((), n, dtype=torch.float64)])

    def summarize(self, totals: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, n = totals.tolist()  # the one host sync per epoch and split
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}


def main_logits(output: torch.Tensor | NetworkOutput) -> torch.Tensor:
    return output.logits if isinstance(output, NetworkOutput) else output


def _classification(cfg: Config) -> Classification:
    return Classification(aux_weight=cfg.model.aux_weight,
                          label_smoothing=cfg.train.label_smoothing)


def _localization(cfg: Config) -> Task:
    from cnnkit.localization import Localization

    t = cfg.task
    return Localization(loss=t.loss, box_loss=t.box_loss, threshold=t.threshold,
                        weights=(t.obj_weight, t.box_weight, t.cls_weight))


TASKS = dict(classification=_classification, localization=_localization)


def build_task(cfg: Config) -> Task:
    """The task `task.name` names, with its options from the `task` section."""
    if cfg.task.name not in TASKS:
        close = difflib.get_close_matches(cfg.task.name, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{cfg.source}: task.name: unknown task '{cfg.task.name}'{hint} "
                          f"(valid: {', '.join(TASKS)})")
    return TASKS[cfg.task.name](cfg)
