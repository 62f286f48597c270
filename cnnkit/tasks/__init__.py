"""What is learned: a task is its loss and its metrics, accumulated on the device (no host
syncs). `build_task` gives the one a config names."""

from __future__ import annotations

import difflib
from typing import Any, Protocol

import torch

from cnnkit.errors import ConfigError
from cnnkit.models.builder import NetworkOutput
from cnnkit.schema import Config
from cnnkit.tasks.classification import Classification


class Task(Protocol):
    """What the trainer asks of a task. `metrics` names what `summarize` returns; the trainer
    writes each as train_NAME and val_NAME in metrics.csv, and the curves plot each."""

    name: str  # what task.name says; only tasks/ compares it
    metrics: tuple[str, ...]
    class_targets: bool  # targets are one class index per example (checked before training)
    extra_outputs: int  # model outputs per example besides the K class scores
    shown_classes: int  # classes a prediction lists unless asked for more or fewer
    scores: str  # how the model's raw output is read (an exported ONNX file's metadata)

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None: ...

    def loss(self, output: torch.Tensor | NetworkOutput, target: torch.Tensor, *,
             training: bool = True) -> torch.Tensor:
        """training=False: the plain loss, without training-only terms (label smoothing)."""

    def stats(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor
              ) -> torch.Tensor: ...

    def summarize(self, totals: torch.Tensor) -> dict[str, float]: ...

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, outputs) -> (B, K): the scores of the classes alone."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) float32 class probabilities."""

    def read(self, logits: torch.Tensor, classes: list[str], *, top: int
             ) -> list[dict[str, Any]]:
        """The output read per image: "class", "probability", "top" [{"class", "probability"},
        ...] and whatever else the task predicts (localization: "object", "p_object", "box")."""


def main_logits(output: torch.Tensor | NetworkOutput) -> torch.Tensor:
    return output.logits if isinstance(output, NetworkOutput) else output


def _classification(cfg: Config) -> Classification:
    weights = cfg.task.class_weights  # auto: resolved from the training split by then
    return Classification(aux_weight=cfg.model.aux_weight,
                          label_smoothing=cfg.train.label_smoothing,
                          class_weights=weights if isinstance(weights, list) else None)


def _localization(cfg: Config) -> Task:
    from cnnkit.tasks.localization import Localization

    t = cfg.task
    return Localization(loss=t.loss, box_loss=t.box_loss, threshold=t.threshold,
                        weights=(t.obj_weight, t.box_weight, t.cls_weight))


TASKS = dict(classification=_classification, localization=_localization)
# the task section's keys each task reads (name, always)
TASK_KEYS = {"classification": ("class_weights",),
             "localization": ("loss", "box_loss", "obj_weight", "box_weight", "cls_weight",
                              "threshold")}


def unread_task_keys(cfg: Config) -> list[str]:
    """task.* keys the config's task does not read (--print-config leaves them out)."""
    read = TASK_KEYS.get(cfg.task.name, ())
    return [f"task.{key}" for keys in TASK_KEYS.values() for key in keys if key not in read]


def build_task(cfg: Config) -> Task:
    """The task `task.name` names, with its options from the `task` section."""
    if cfg.task.name not in TASKS:
        close = difflib.get_close_matches(cfg.task.name, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{cfg.source}: task.name: unknown task '{cfg.task.name}'{hint} "
                          f"(valid: {', '.join(TASKS)})")
    return TASKS[cfg.task.name](cfg)


def recorded_task(cfg: Config, recorded: str | None) -> Task:
    """The task of a checkpoint's config, which must be the one the checkpoint records (when it
    records one)."""
    task = build_task(cfg)
    if recorded is not None and recorded != task.name:
        raise ConfigError(f"task '{recorded}' but its config says '{task.name}'")
    return task
