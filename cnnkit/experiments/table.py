"""`cnnkit runs`: one row per run found under some folders, with the config keys that differ
between them (only those), where each run stands and its metric; runs that differ only by
train.seed summarized as mean ± standard deviation. Read from the run directories' files."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.experiments.groups import SEED, differing_keys, seed_groups
from cnnkit.experiments.names import distinct_tails, key_columns, short_hash, value_text
from cnnkit.rundir.records import RunRecord, read_runs

OWN_COLUMNS = frozenset({"name", "status", "epochs", "planned", "best", "best_epoch", "final",
                         "seconds", "path", "runs", "seeds", "best_sd", "final_sd",
                         "seconds_sd"})


@dataclass
class Table:
    metric: str  # the metric whose best and final values are shown
    keys: dict[str, str]  # column -> config key path, for the keys that differ
    runs: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)  # over seeds, 2 runs or more


def runs_table(folders: list[str | Path], *, sort: str | None = None) -> Table:
    records = read_runs(folders)
    if not records:
        raise CnnkitError(f"no runs found under {', '.join(map(str, folders))}")
    metric = sort or Counter(r.monitor for r in records).most_common(1)[0][0]
    _check_metric(metric, records)
    keys = differing_keys(records)
    # a key whose short name is one of the table's own columns (train.schedule.name and the
    # run's name) keeps its full dotted path: it never overwrites the run's column
    columns = [key if column in OWN_COLUMNS else column
               for column, key in zip(key_columns(keys), keys)]
    table = Table(metric, dict(zip(columns, keys)))
    names = distinct_tails([r.path.resolve().parts for r in records])
    table.runs = [_row(name, record, table) for name, record in zip(names, records)]
    if sort:
        table.runs.sort(key=lambda row: _order(row["best"], metric))
    if SEED in keys:
        table.groups = [_group(g, table) for g in seed_groups(records, keys) if len(g) > 1]
    return table


def _check_metric(metric: str, records: list[RunRecord]) -> None:
    known = list(dict.fromkeys(k for r in records if r.history for k in r.history[0]
                               if k not in ("epoch", "seconds", "lr")))
    if known and metric not in known:
        raise CnnkitError(f"--sort {metric}: not a metric of these runs (they have "
                          f"{', '.join(known)})")


def _order(value: float | None, metric: str) -> tuple[bool, float]:
    """Best first: the lowest loss, the highest anything else; runs without a value last."""
    if value is None:
        return True, 0.0
    return False, value if metric.endswith("loss") else -value


def _best(record: RunRecord, metric: str) -> tuple[float | None, int | None, float | None]:
    """(best value, its epoch, final value) of `metric`; Nones where the run has none."""
    values = [row[metric] for row in record.history if metric in row]
    if not values:
        return None, None, None
    best = min(values) if metric.endswith("loss") else max(values)
    return best, values.index(best) + 1, values[-1]


def _row(name: str, record: RunRecord, table: Table) -> dict[str, Any]:
    config = record.values
    best, epoch, final = _best(record, table.metric)
    return {"name": name, **{c: config.get(k) for c, k in table.keys.items()},
            "status": record.status_text, "epochs": record.epoch,
            "planned": record.epochs if record.config else None,
            "best": best, "best_epoch": epoch, "final": final,
            "seconds": round(record.seconds, 2), "path": str(record.path)}


def _group(records: list[RunRecord], table: Table) -> dict[str, Any]:
    config = records[0].values
    scores = [_best(r, table.metric) for r in records if r.history]
    group = {c: config.get(k) for c, k in table.keys.items() if k != SEED}
    group.update(runs=len(records), seeds=[r.values.get(SEED) for r in records])
    for name, values in (("best", [s[0] for s in scores]), ("final", [s[2] for s in scores]),
                         ("seconds", [r.seconds for r in records if r.history])):
        values = [v for v in values if v is not None]
        group[name] = statistics.fmean(values) if values else None
        group[f"{name}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return group


def to_json(table: Table) -> str:
    return json.dumps(asdict(table), indent=1, default=str)


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table.runs[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: value_text(v) if isinstance(v, (list, dict, bool)) or v is None
                      else v for k, v in row.items()} for row in table.runs)
    return buffer.getvalue()


def to_text(table: Table, *, width: int = 0) -> str:
    """The runs, then the seed groups (mean ± sd), then the legend of structured values. Rows
    wider than `width` characters (0: never) are shown in groups of columns, each group
    starting with the first column (the run's name) and taking as many more as fit, groups
    one blank line apart; a column wider than `width` alone is shown whole, never cut."""
    m = table.metric
    header = ["name", *table.keys, "status", "epochs", f"best {m}", "at epoch", f"final {m}",
              "time"]
    legend: dict[str, str] = {}
    lines = [header] + [[row["name"], *(_cell(row[c], table.keys[c], legend)
                                        for c in table.keys), row["status"],
                         f"{row['epochs']}/{value_text(row['planned']).replace('null', '-')}",
                         _number(row["best"]),
                         str(row["best_epoch"] or "-"), _number(row["final"]),
                         _seconds(row["seconds"])] for row in table.runs]
    text = _aligned(lines, width)
    if table.groups:
        columns = [c for c in table.keys if table.keys[c] != SEED]
        head = [*columns, "seeds", f"best {m}", f"final {m}", "time"]
        # one seed has no spread: its value alone, not "± 0.0000"
        rows = [[*(_cell(g[c], table.keys[c], legend) for c in columns), str(g["runs"]),
                 *(_spread(g[k], g[f"{k}_sd"] if g["runs"] > 1 else None, show)
                   for k, show in (("best", _number), ("final", _number),
                                   ("seconds", _seconds)))] for g in table.groups]
        text += "\n\nover seeds (mean ± sd):\n" + _aligned([head] + rows, width)
    if legend:  # a structured value (model.layers) as a short hash in its cell
        text += "\n\n" + "\n".join(f"{h}  {what}" for h, what in legend.items())
    return text


LEGEND_WIDTH = 100  # characters of a structured value the legend shows


def _cell(value: Any, key: str, legend: dict[str, str]) -> str:
    """A key's value as its cell: a list or mapping (model.layers) by a short hash, written
    once in `legend` with its key and its value (cut at LEGEND_WIDTH characters)."""
    text = value_text(value)
    if not isinstance(value, (list, dict)):
        return text
    mark = f"#{short_hash(text)[:6]}"
    shown = f"{key} = {text}"
    legend.setdefault(mark, shown if len(shown) <= LEGEND_WIDTH
                      else shown[:LEGEND_WIDTH - 3] + "...")
    return mark


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _spread(mean: float | None, sd: float | None, show) -> str:
    if mean is None:
        return "-"
    return show(mean) if sd is None else f"{show(mean)} ± {show(sd)}"


def _aligned(lines: list[list[str]], width: int = 0) -> str:
    """The cells in columns two spaces apart, in column groups where a line is wider than
    `width` (0: one group)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n\n".join("\n".join("  ".join(line[i].ljust(widths[i]) for i in group).rstrip()
                                  for line in lines) for group in _groups(widths, width))


def _groups(widths: list[int], width: int) -> list[list[int]]:
    """Column indices of each group: all of them where they fit in `width` (or `width` is 0);
    else the first column and as many more as fit, at least one more however wide."""
    if not width or sum(widths) + 2 * (len(widths) - 1) <= width:
        return [list(range(len(widths)))]
    groups, group, used = [], [0], widths[0]
    for i in range(1, len(widths)):
        if len(group) > 1 and used + 2 + widths[i] > width:
            groups.append(group)
            group, used = [0], widths[0]
        group.append(i)
        used += 2 + widths[i]
    return [*groups, group]
