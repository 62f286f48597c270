"""Early stopping on a validation metric, decided from the metrics history alone.

The history is in every checkpoint, so a resumed run stops where the uninterrupted one
would have, with no counter to save.
"""

from __future__ import annotations

import math
from typing import Any

from cnnkit.schema import EarlyStoppingConfig


def improves(value: float, best: float | None, monitor: str, *, min_delta: float = 0.0) -> bool:
    """Whether `value` of `monitor` (lower is better for a loss) beats `best` by more than
    `min_delta`. The first value always does; NaN (a validation pass whose activations blew
    up) never does, and any number beats a NaN best, so one bad epoch cannot freeze best.pt."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best - min_delta if monitor.endswith("loss") else value > best + min_delta


def monitored(row: dict[str, Any], monitor: str) -> float:
    """An epoch's train.monitor value; without a validation split a val_* monitor reads its
    train_* column (as best.pt does)."""
    return row[monitor] if monitor in row else row["train_" + monitor.split("_", 1)[1]]


def best_value(history: list[dict[str, Any]], monitor: str) -> float:
    """The run's best monitored value, best.pt's (NaN for no history)."""
    best = None
    for row in history:
        if improves(monitored(row, monitor), best, monitor):
            best = monitored(row, monitor)
    return math.nan if best is None else best


def best_index(history: list[dict[str, Any]], monitor: str, *,
               min_delta: float = 0.0) -> int | None:
    """Where `monitor` last beat its best by more than `min_delta` (None for no history)."""
    at = None
    for i, row in enumerate(history):
        if improves(row[monitor], None if at is None else history[at][monitor], monitor,
                    min_delta=min_delta):
            at = i
    return at


def epochs_without_improvement(history: list[dict[str, Any]], monitor: str, *,
                               min_delta: float = 0.0) -> int:
    """Epochs since `monitor` last beat its best by more than `min_delta` (0 right after)."""
    at = best_index(history, monitor, min_delta=min_delta)
    return 0 if at is None else len(history) - 1 - at


def should_stop(history: list[dict[str, Any]], monitor: str, cfg: EarlyStoppingConfig) -> bool:
    if not cfg.patience:
        return False
    return epochs_without_improvement(history, monitor, min_delta=cfg.min_delta) >= cfg.patience
