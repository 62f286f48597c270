"""Early stopping on a validation metric, decided from the metrics history alone.

The history is in every checkpoint, so a resumed run stops where the uninterrupted one
would have, with no counter to save.
"""

from __future__ import annotations

from typing import Any

from cnnkit.config import EarlyStoppingConfig
from cnnkit.errors import ConfigError


def epochs_without_improvement(history: list[dict[str, Any]], monitor: str, *,
                               min_delta: float = 0.0) -> int:
    """Epochs since `monitor` last beat its best by more than `min_delta` (0 right after)."""
    sign = -1.0 if monitor.endswith("loss") else 1.0  # larger is better after the sign
    best, stale = None, 0
    for row in history:
        value = sign * row[monitor]
        if best is None or value > best + min_delta:
            best, stale = value, 0
        else:
            stale += 1
    return stale


def should_stop(history: list[dict[str, Any]], monitor: str, cfg: EarlyStoppingConfig) -> bool:
    if cfg.patience < 0 or cfg.min_delta < 0:
        raise ConfigError(f"train.early_stopping: expected patience and min_delta >= 0, found "
                          f"{cfg.patience} and {cfg.min_delta}")
    if not cfg.patience:
        return False
    return epochs_without_improvement(history, monitor, min_delta=cfg.min_delta) >= cfg.patience
