"""`cnnkit plot DIR` for a search: each trial's best value of the metric against each
searched key, one panel per key (log axis for a loguniform key); finished trials filled,
pruned ones hollow (their best is over the epochs they ran). Read from DIR/search.json and
the trials' run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cnnkit.errors import CnnkitError
from cnnkit.experiments.search import SEARCH_FILE
from cnnkit.experiments.space import parse_dim
from cnnkit.rundir.early_stopping import best_value
from cnnkit.rundir.records import read_runs
from cnnkit.training.curves import new_figure, save_figure


def is_search(folder: str | Path) -> bool:
    return (Path(folder) / SEARCH_FILE).is_file()


def plot_search(folder: str | Path, path: str | Path, *, metric: str) -> int:
    """The picture; the number of trials drawn."""
    folder = Path(folder)
    try:
        space = [parse_dim(item) for item in
                 json.loads((folder / SEARCH_FILE).read_text())["space"]]
    except (OSError, ValueError, KeyError) as exc:
        raise CnnkitError(f"{folder / SEARCH_FILE}: not a readable search record ({exc})") \
            from None
    records = [r for r in read_runs([folder]) if r.history and r.status in
               ("finished", "pruned")]
    if not records:
        raise CnnkitError(f"{folder}: no trial has finished or been pruned yet")
    if metric not in records[0].history[0]:
        raise CnnkitError(f"--metric {metric}: not in the trials' metrics (they have "
                          f"{', '.join(records[0].history[0])})")
    fig = new_figure(figsize=(4 * len(space), 3.6))
    axes = fig.subplots(1, len(space), squeeze=False, sharey=True)[0]
    for ax, dim in zip(axes, space):
        for status, fill in (("finished", True), ("pruned", False)):
            points = [(r.values.get(dim.key), best_value(r.history, metric)) for r in records
                      if r.status == status]
            points = [(x, y) for x, y in points if x is not None and not math.isnan(y)]
            ax.scatter([_position(dim, x) for x, _ in points],
                       [y for _, y in points], label=f"{status} ({len(points)})",
                       facecolors=None if fill else "none", edgecolors="C0" if not fill else None)
        if dim.kind == "loguniform":
            ax.set_xscale("log")
        if dim.kind == "choice":  # the choices in the order given
            ax.set_xticks(range(len(dim.args)), [str(v) for v in dim.args])
        ax.set_xlabel(dim.key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"best {metric.replace('_', ' ')}")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return len(records)


def _position(dim, value):
    """Where a value sits on its key's axis: a choice at its index among the choices."""
    if dim.kind != "choice":
        return value
    matches = [i for i, v in enumerate(dim.args) if v == value]
    return matches[0] if matches else math.nan
