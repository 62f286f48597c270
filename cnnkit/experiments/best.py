"""`cnnkit runs DIR --best-config`: the best trial's resolved config, as YAML that
`cnnkit train` reads back. Read from the run directories alone (no Optuna, no torch): a
finished run's best monitored value (best.pt's), the direction from train.monitor."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from cnnkit.errors import CnnkitError
from cnnkit.experiments.search import SEARCH_FILE
from cnnkit.rundir.early_stopping import best_value
from cnnkit.rundir.records import read_runs


def best_config(folder: str | Path) -> str:
    """The YAML text: a comment naming the run and its value, then its config.yaml with
    `out` left to `cnnkit train` (runs/NAME, or --out)."""
    folder = Path(folder)
    records = [r for r in read_runs([folder]) if r.status == "finished" and r.history]
    if not records:
        kind = "search" if (folder / SEARCH_FILE).exists() else "folder"
        raise CnnkitError(f"{folder}: no finished run in this {kind} yet, so no best config")
    monitors = {r.monitor for r in records}
    if len(monitors) > 1:
        raise CnnkitError(f"{folder}: the runs monitor different metrics "
                          f"({', '.join(sorted(monitors))}); no one best")
    monitor = monitors.pop()
    scores = {id(r): best_value(r.history, monitor) for r in records}
    sign = 1 if monitor.endswith("loss") else -1  # best first; a NaN last
    best = min(records, key=lambda r: (math.isnan(scores[id(r)]), sign * scores[id(r)]))
    config = dict(best.config)
    config.pop("out", None)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    return (f"# the best of {len(records)} finished runs in {folder}: {best.path.name}, "
            f"{monitor} {scores[id(best)]:.4f}\n# cnnkit train best.yaml --out runs/best\n"
            f"{text}")
