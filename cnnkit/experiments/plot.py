"""`cnnkit plot`: one metric of several runs overlaid, epoch by epoch, in one PNG; a folder
stands for the runs under it, and runs that differ only by train.seed are one line (their
mean) with a band of ± one standard deviation."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from cnnkit.errors import CnnkitError, display
from cnnkit.experiments.groups import SEED, differing_keys, seed_groups
from cnnkit.experiments.names import distinct_tails, key_columns, run_name
from cnnkit.rundir import METRICS, refuse_run_file
from cnnkit.rundir.metrics import read_metrics
from cnnkit.rundir.records import find_runs, is_run_dir, read_run
from cnnkit.training.curves import new_figure, save_figure


def compare_runs(run_dirs: list[str | Path], out: str | Path, *, metric: str = "val_acc",
                 bands: bool = True) -> None:
    """Draw `metric` of the runs at or under `run_dirs` into `out`; bands: seeds as one line."""
    refuse_run_file(out, flag="--out")
    # a folder of runs (a sweep, say) stands for every run under it that has an epoch
    paths = [p for d in run_dirs
             for p in ([r for r in find_runs(d) if (r / METRICS).exists()]
                       if Path(d).is_dir() and not is_run_dir(Path(d)) else [Path(d)])]
    if not paths:
        raise CnnkitError(f"no runs found under {', '.join(map(str, run_dirs))}")
    if len(paths) > 1:  # a damaged run is left out with its line; the others are drawn
        for record in [r for r in map(read_run, paths) if r.status == "damaged"]:
            print(f"cnnkit: warning: {display(record.reason or str(record.path))}; left out",
                  file=sys.stderr)
            paths.remove(record.path)
        if not paths:
            raise CnnkitError(f"no readable runs under {', '.join(map(str, run_dirs))}")
    histories = [read_metrics(p) for p in paths]
    missing = [str(p) for p, rows in zip(paths, histories) if metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(histories[0][0])})")
    records = [read_run(p) for p in paths]
    labels = distinct_tails([p.resolve().parts for p in paths])
    keys = differing_keys(records)
    by_id = {id(r): (label, h) for r, label, h in zip(records, labels, histories)}
    lines: dict[str, list] = {}
    groups = seed_groups(records, keys) if SEED in keys and bands else [[r] for r in records]
    for group in groups:
        if len(group) == 1:
            label, history = by_id[id(group[0])]
            lines[label] = history
            continue
        shown = [(c, group[0].values.get(k)) for c, k in zip(key_columns(keys), keys)
                 if k != SEED]
        label = run_name(shown) if shown else paths[0].resolve().parent.name
        lines[label] = [by_id[id(r)][1] for r in group]
    plot_runs(lines, out, metric=metric)


def plot_runs(runs: dict[str, list[dict] | list[list[dict]]], path: str | Path, *,
              metric: str = "val_acc") -> None:
    """One curve of `metric` per run, overlaid: the course's model1-vs-model2 figure. A value
    that is a list of histories (runs that differ only by seed) is drawn as its mean over the
    epochs they all have, with a band of ± one standard deviation."""
    fig = new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, histories in runs.items():
        if histories and isinstance(histories[0], dict):
            histories = [histories]
        epochs, mean, sd = band(histories, metric)
        line, = ax.plot(epochs, mean, marker="o", markersize=3,
                        label=display(name) if len(histories) == 1
                        else f"{display(name)} ({len(histories)} seeds)")
        if len(histories) > 1:
            ax.fill_between(epochs, [m - s for m, s in zip(mean, sd)],
                            [m + s for m, s in zip(mean, sd)], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, path)


def band(histories: list[list[dict]], metric: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean, sd) of `metric` over the runs, at the epochs all of them reached; the
    sample standard deviation (0 for one run)."""
    epochs = [row["epoch"] for row in histories[0][:min(len(h) for h in histories)]]
    columns = [[h[i][metric] for h in histories] for i in range(len(epochs))]
    mean = [statistics.fmean(c) for c in columns]
    sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
    return epochs, mean, sd


