"""RUN/metrics.csv: one row per epoch, a header of the history's keys (epoch, train_loss,
val_acc, ..., lr, seconds). The one writer and the one reader."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import CnnkitError
from cnnkit.rundir import METRICS


def metrics_csv(history: list[dict]) -> str:
    """The history as metrics.csv's text: a run resumed from an older cnnkit gains columns
    (data_wait) its first rows lack, left empty there."""
    return rows_csv(history)


def rows_csv(rows: list[dict]) -> str:
    """Rows as CSV text, with every column any row has, in order of first appearance (a
    column a row lacks is left empty there); also predict's --csv table."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_metrics(run_dir: str | Path, history: list[dict]) -> None:
    """RUN_DIR/metrics.csv, written atomically (a reader sees the old file or the new)."""
    atomic_write_text(Path(run_dir) / METRICS, metrics_csv(history))


def read_metrics(run_dir: str | Path, *, missing_ok: bool = False) -> list[dict[str, float]]:
    """The rows of RUN_DIR/metrics.csv as numbers (epoch as int). missing_ok: [] where the
    file is missing or holds no epochs yet; else both are errors that name the file."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        if missing_ok:
            return []
        raise CnnkitError(f"{path}: not found; is {run_dir} a cnnkit run directory?") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # a folder, bytes not UTF-8
        raise CnnkitError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
                          ) from None
    if not rows and not missing_ok:
        raise CnnkitError(f"{path}: holds no epochs yet")
    if rows and "epoch" not in rows[0]:
        raise CnnkitError(f"{path}: not a cnnkit metrics file (no epoch column)")
    try:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]
    except (TypeError, ValueError):
        raise CnnkitError(f"{path}: not a cnnkit metrics file (non-numeric values)") from None
