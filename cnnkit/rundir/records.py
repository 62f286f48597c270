"""Run directories read back, as a sweep, `cnnkit runs` and `cnnkit plot` see them: where
they are, their config, their metrics and their status, from the files alone (no torch).

The status comes from the run's manifest RUN/run.json where it has one; a run directory
without one is judged by what it holds: metrics.csv's epochs against train.epochs (or early
stopping's verdict on them), and a failure the sweep recorded in its sweep.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnkit.errors import CnnkitError
from cnnkit.rundir import CONFIG, MANIFEST, METRICS, SWEEP
from cnnkit.rundir.early_stopping import should_stop
from cnnkit.rundir.lock import read_manifest
from cnnkit.rundir.metrics import read_metrics
from cnnkit.schema import EarlyStoppingConfig
from cnnkit.userfiles import MAX_BYTES, open_regular, safe_yaml


@dataclass
class RunRecord:
    """What a run directory holds, as plain data."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml; {} where missing
    history: list[dict[str, float]] = field(default_factory=list)  # metrics.csv's rows
    status: str = "not started"  # finished, interrupted, failed, pruned, running, not
    # started, or damaged: a file of it cannot be read (`reason` names it)
    epochs: int = 0  # planned (train.epochs)
    reason: str | None = None  # a failure's one line
    planned: dict[str, Any] = field(default_factory=dict)  # a sweep's overrides, key -> value

    @property
    def values(self) -> dict[str, Any]:
        """The config as key paths -> values; a sweep member not started yet: its overrides."""
        return flat(self.config) if self.config else dict(self.planned)

    @property
    def epoch(self) -> int:
        return len(self.history)

    @property
    def status_text(self) -> str:
        if self.status == "interrupted":
            return f"interrupted at epoch {self.epoch}"
        if self.status in ("failed", "damaged"):
            return f"{self.status}: {self.reason}" if self.reason else self.status
        return self.status

    @property
    def monitor(self) -> str:
        return self.config.get("train", {}).get("monitor", "val_acc")

    @property
    def seconds(self) -> float:
        return sum(row.get("seconds", 0.0) for row in self.history)


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in (CONFIG, METRICS, MANIFEST))


def find_runs(folder: str | Path) -> list[Path]:
    """Run directories at or under `folder`, in name order (a sweep's in its own order)."""
    folder = Path(folder)
    if is_run_dir(folder):
        return [folder]
    try:
        sweep = read_sweep(folder)
    except CnnkitError:  # a damaged sweep.json: its folders are looked at as they are
        sweep = None
    if sweep is not None:
        return [folder / name for name in sweep["runs"]]
    found = []
    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    for path in children:
        found += find_runs(path)
    return found


def read_sweep(folder: Path) -> dict | None:
    """FOLDER/sweep.json (cnnkit.experiments.sweep), None where the folder holds none."""
    path = folder / SWEEP
    try:
        sweep = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: not a readable sweep file ({exc})") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("runs"), dict):
        raise CnnkitError(f"{path}: not a cnnkit sweep file (no 'runs' mapping)")
    for name, entry in sweep["runs"].items():
        if name in ("", ".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise CnnkitError(f"{path}: run {name[:60]!r} is not a folder name in {folder}")
        if not isinstance(entry, dict) or not isinstance(entry.get("overrides", []), list) \
                or not isinstance(entry.get("failed", ""), str):
            raise CnnkitError(f"{path}: run {name[:60]!r}: not a sweep entry (overrides, "
                              f"failed)")
    return sweep


def read_run(path: Path, *, failure: str | None = None) -> RunRecord:
    """A run directory's record; `failure`: the reason a sweep recorded for it, if any. Total:
    whatever its files hold, a record comes back, "damaged" with the file's one line."""
    record = RunRecord(Path(path))
    try:
        _read_into(record, failure)
    except CnnkitError as exc:
        record.status, record.reason = "damaged", _one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 -- a reader of user files is total
        record.status, record.reason = "damaged", _one_line(
            f"{record.path}: {type(exc).__name__}: {exc}")
    if record.status == "damaged":
        record.config, record.history = {}, []
    return record


def _read_into(record: RunRecord, failure: str | None) -> None:
    config_path = record.path / CONFIG
    if config_path.exists():
        record.config = _read_config(config_path)
    record.history = read_metrics(record.path, missing_ok=True)
    epochs = record.config.get("train", {}).get("epochs", 0)
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        raise CnnkitError(f"{config_path}: train.epochs is {epochs!r:.40}, not an integer")
    record.epochs = epochs
    manifest = read_manifest(record.path)  # "running" with no lock held reads "interrupted"
    if manifest is not None:
        record.status, record.reason = manifest["status"], manifest.get("reason")
        record.epochs = manifest["epochs"]
        if failure is not None and record.status != "finished":  # the sweep saw it fail
            record.status, record.reason = "failed", failure
    else:
        record.status, record.reason = _judged(record, failure)


def _read_config(path: Path) -> dict:
    """RUN/config.yaml through the config loader's limits (size, aliases, depth)."""
    try:
        with open_regular(path) as f:
            text = f.read(MAX_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: cannot be read ({exc})") from None
    config = safe_yaml(text, where=f"{path}: not valid YAML", source=str(path))
    if len(text) > MAX_BYTES or not isinstance(config, dict) or not all(
            isinstance(config.get(k, {}), dict) for k in ("train", "model", "data", "task")):
        raise CnnkitError(f"{path}: not a cnnkit config (a mapping of sections)")
    return config


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"


def _judged(record: RunRecord, failure: str | None) -> tuple[str, str | None]:
    """The status of a run directory without a manifest, from its files."""
    if failure is not None:
        return "failed", failure
    if not record.config:
        return "not started", None
    if record.epoch >= record.epochs:
        return "finished", None
    train = record.config.get("train", {})
    stopping = EarlyStoppingConfig(**train.get("early_stopping", {}))
    if record.history and record.monitor in record.history[0] \
            and should_stop(record.history, record.monitor, stopping):
        return "finished", None  # early stopping ended it before train.epochs
    return "interrupted", None


def read_runs(folders: list[str | Path]) -> list[RunRecord]:
    """Every run at or under the folders, a sweep's members with their recorded failures."""
    records, sweeps = [], {}
    for folder in folders:
        if not Path(folder).exists():
            raise CnnkitError(f"{folder}: no such folder")
        try:
            read_sweep(Path(folder))
        except CnnkitError as exc:  # listed as damaged; its folders are listed as they are
            records.append(RunRecord(Path(folder), status="damaged", reason=str(exc)))
        for path in find_runs(folder):
            if path.parent not in sweeps:
                try:
                    sweeps[path.parent] = read_sweep(path.parent) or {"runs": {}}
                except CnnkitError:
                    sweeps[path.parent] = {"runs": {}}
            entry = sweeps[path.parent]["runs"].get(path.name, {})
            record = read_run(path, failure=entry.get("failed"))
            record.planned = dict(_parsed(item) for item in entry.get("overrides", []))
            records.append(record)
    return records


def _parsed(item: str) -> tuple[str, Any]:
    """`train.lr=0.001` (an override as sweep.json keeps it) -> ("train.lr", 0.001)."""
    key, _, text = item.partition("=")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError:
        return key, text


def flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.005, ...}: mappings flattened to key paths; lists kept as values."""
    if not isinstance(config, dict):
        return {prefix: config}
    items: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            items.update(flat(value, path))
        else:
            items[path] = value
    return items
