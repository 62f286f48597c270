"""`cnnkit runs` and `cnnkit plot DIR` on run directories written by hand (no training): the
differing-keys columns, each status (finished, early-stopped, interrupted, failed, from a
manifest or a sweep's record), seed aggregation as mean ± sd, and seeds drawn as bands."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnkit.errors import CnnkitError
from cnnkit.experiments.plot import band
from cnnkit.rundir.metrics import read_metrics, write_metrics


def make_run(path: Path, *, lr: float = 0.1, seed: int = 0, epochs: int = 3,
             acc: tuple[float, ...] = (), patience: int = 0, manifest: dict | None = None
             ) -> Path:
    """A run directory as the trainer leaves it: config.yaml, metrics.csv (one row per value
    of `acc`, 2 seconds an epoch), and run.json where `manifest` is given."""
    path.mkdir(parents=True)
    config = {"model": {"input": [1, 28, 28], "layers": [["Flatten"], ["Linear", 10]]},
              "data": {"name": "mnist-sample"},
              "train": {"lr": lr, "seed": seed, "epochs": epochs, "monitor": "val_acc",
                        "early_stopping": {"patience": patience, "min_delta": 0.0}},
              "out": str(path)}  # differs between runs, but says nothing about them
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"epoch": i + 1, "train_loss": 1.0 - a, "train_acc": a, "val_loss": 1.0 - a,
             "val_acc": a, "lr": lr, "seconds": 2.0} for i, a in enumerate(acc)]
    if rows:
        write_metrics(path, rows)
    if manifest is not None:
        (path / "run.json").write_text(json.dumps({  # every key RunDirectory.start writes
            "format": 1, "epochs": epochs, "epoch": 0, "pid": 1, "host": "h",
            "command": ["cnnkit", "train"], "created": "2026-01-01T00:00:00Z",
            "config": "config.yaml", "status": "finished", **manifest}))
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Two learning rates × two seeds: finished, finished, interrupted, failed (manifest)."""
    out = tmp_path / "sweep"
    make_run(out / "a", lr=0.1, seed=0, acc=(0.5, 0.7, 0.6))
    make_run(out / "b", lr=0.1, seed=1, acc=(0.6, 0.8, 0.8))
    make_run(out / "c", lr=0.01, seed=0, acc=(0.3,))
    make_run(out / "d", lr=0.01, seed=1, acc=(0.2,), manifest={
        "status": "failed", "epoch": 1, "reason": "train loss became nan at epoch 2, step 3"})
    return out


def test_the_table_has_only_the_differing_keys_each_status_and_seed_means(sweep, cli):
    code, out, err = cli("runs", sweep, "--json")
    assert code == 0, err
    table = json.loads(out)
    assert table["metric"] == "val_acc" and table["keys"] == {"lr": "train.lr",
                                                              "seed": "train.seed"}
    rows = {row["name"]: row for row in table["runs"]}
    assert [rows[n]["status"] for n in "abcd"] == [
        "finished", "finished", "interrupted at epoch 1",
        "failed: train loss became nan at epoch 2, step 3"]
    assert (rows["a"]["lr"], rows["a"]["seed"], rows["a"]["epochs"], rows["a"]["planned"]) == (
        0.1, 0, 3, 3)
    assert (rows["a"]["best"], rows["a"]["best_epoch"], rows["a"]["final"]) == (0.7, 2, 0.6)
    assert rows["b"]["seconds"] == 6.0
    high, low = table["groups"]
    assert (high["lr"], high["runs"], high["seeds"]) == (0.1, 2, [0, 1]) and "seed" not in high
    assert high["best"] == pytest.approx(0.75)
    assert high["best_sd"] == pytest.approx(statistics.stdev([0.7, 0.8]))
    assert high["final"] == pytest.approx(0.7)
    assert high["final_sd"] == pytest.approx(statistics.stdev([0.6, 0.8]))
    assert (low["lr"], low["best"], low["best_sd"]) == (0.01, pytest.approx(0.25),
                                                        pytest.approx(statistics.stdev([.3, .2])))
    code, text, _ = cli("runs", sweep)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "lr", "seed", "status", "epochs", "best", "val_acc", "at",
                                "epoch", "final", "val_acc", "time"]
    assert lines[1].split() == ["a", "0.1", "0", "finished", "3/3", "0.7000", "2", "0.6000",
                                "6.0s"]
    assert "over seeds (mean ± sd):" in text and "0.7500 ± 0.0707" in text


def test_sort_by_a_metric_csv_and_a_metric_it_does_not_have(sweep, cli):
    code, out, _ = cli("runs", sweep, "--sort", "val_loss", "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("name,lr,seed,status,epochs,planned,best,best_epoch,final,")
    assert [line.split(",")[0] for line in lines[1:]] == ["b", "a", "c", "d"]  # lowest first
    code, _, err = cli("runs", sweep, "--sort", "val_iou")
    assert code == 2 and "--sort val_iou: not a metric of these runs (they have train_loss," in err


def test_status_without_a_manifest_and_with_a_stale_one(tmp_path, cli):
    make_run(tmp_path / "stopped", patience=1, epochs=5, acc=(0.6, 0.5))  # early stopping
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    make_run(tmp_path / "killed", acc=(0.6,), manifest={
        "status": "running", "epoch": 1, "pid": int(dead.stdout), "host": socket.gethostname()})
    make_run(tmp_path / "elsewhere", acc=(0.6,), manifest={  # the lock decides, not the host
        "status": "running", "epoch": 1, "pid": 1, "host": "another-host"})
    code, out, err = cli("runs", tmp_path, "--json")
    rows = {row["name"]: row["status"] for row in json.loads(out)["runs"]}
    assert rows == {"stopped": "finished", "killed": "interrupted at epoch 1",
                    "elsewhere": "interrupted at epoch 1"}


def test_a_sweep_folder_lists_its_members_with_recorded_failures(tmp_path, cli):
    out = tmp_path / "sweep"
    make_run(out / "lr=0.1", acc=(0.5, 0.6, 0.7))
    make_run(out / "lr=100.0", lr=100.0, acc=())
    (out / "sweep.json").write_text(json.dumps({"format": 1, "runs": {
        "lr=0.1": {"overrides": ["train.lr=0.1"]},
        "lr=100.0": {"overrides": ["train.lr=100.0"], "failed": "train loss became nan"},
        "lr=0.001": {"overrides": ["train.lr=0.001"]}}}))
    code, out_, err = cli("runs", out, "--json")
    assert code == 0, err
    rows = json.loads(out_)["runs"]
    assert [(r["name"], r["status"]) for r in rows] == [
        ("lr=0.1", "finished"), ("lr=100.0", "failed: train loss became nan"),
        ("lr=0.001", "not started")]
    assert [r["lr"] for r in rows] == [0.1, 100.0, 0.001]  # the last from its overrides
    assert rows[2]["planned"] is None
    code, above, _ = cli("runs", tmp_path, "--json")  # the folder above: the same, found
    assert [r["status"] for r in json.loads(above)["runs"]] == [r["status"] for r in rows]
    code, _, err = cli("runs", tmp_path / "nothing")
    assert code == 2 and "nothing: no such folder" in err


def test_plot_dir_draws_seeds_as_one_line_with_a_band(sweep, tmp_path, cli, monkeypatch):
    drawn = {}
    monkeypatch.setattr("cnnkit.experiments.plot.plot_runs",
                        lambda lines, path, metric: drawn.update(lines))
    code, _, err = cli("plot", sweep, "--out", tmp_path / "bands.png")
    assert code == 0, err
    assert list(drawn) == ["lr=0.1", "lr=0.01"]
    assert [len(histories) for histories in drawn.values()] == [2, 2]
    drawn.clear()
    code, _, err = cli("plot", sweep, "--out", tmp_path / "bands.png", "--no-bands")
    assert list(drawn) == ["a", "b", "c", "d"]


def test_plot_labels_runs_that_share_a_folder_name_by_their_distinct_tails(tmp_path, cli,
                                                                            monkeypatch):
    make_run(tmp_path / "x" / "run", acc=(0.5, 0.6))
    make_run(tmp_path / "y" / "run", acc=(0.4, 0.7), lr=0.2)
    make_run(tmp_path / "other", acc=(0.4,), lr=0.3)
    code, _, err = cli("plot", tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "other",
                       "--out", tmp_path / "runs.png")
    assert code == 0, err
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    drawn = {}
    monkeypatch.setattr("cnnkit.experiments.plot.plot_runs",
                        lambda lines, path, metric: drawn.update(lines))
    cli("plot", tmp_path, "--out", tmp_path / "runs.png")
    assert list(drawn) == ["other", "x/run", "y/run"]


def test_a_band_is_the_mean_and_sd_over_the_epochs_all_runs_reached():
    rows = [[{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}],
            [{"epoch": 1, "val_acc": 0.7}, {"epoch": 2, "val_acc": 0.9},
             {"epoch": 3, "val_acc": 0.95}]]
    epochs, mean, sd = band(rows, "val_acc")
    assert epochs == [1, 2] and mean == pytest.approx([0.6, 0.8])
    assert sd == pytest.approx([statistics.stdev([0.5, 0.7])] * 2)


def test_metrics_csv_reads_back_as_written_and_names_what_is_wrong(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5, "val_acc": 0.875, "lr": 0.001, "seconds": 1.25},
            {"epoch": 2, "train_loss": 0.25, "val_acc": float("nan"), "lr": 0.001,
             "seconds": 1.0}]
    write_metrics(tmp_path, rows)
    back = read_metrics(tmp_path)
    assert back[0] == rows[0] and type(back[1]["epoch"]) is int
    assert back[1]["val_acc"] != back[1]["val_acc"]  # NaN, as a diverged epoch leaves it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_metrics(empty, missing_ok=True) == []
    with pytest.raises(CnnkitError, match=r"empty/metrics.csv: not found; is .* a cnnkit run"):
        read_metrics(empty)
    (empty / "metrics.csv").write_text("epoch,val_acc\n1,high\n")
    with pytest.raises(CnnkitError, match=r"metrics.csv: not a cnnkit metrics file"):
        read_metrics(empty, missing_ok=True)


@pytest.fixture
def wide(tmp_path) -> Path:
    """Three runs that differ in seven keys, one of them a long path: about 180 characters a
    row unwrapped."""
    for k, (width, optimizer) in enumerate([(10, "adam"), (64, "sgd"), (32, "adamw")]):
        run = make_run(tmp_path / "wide" / f"run-{k}", lr=10.0 ** -k, seed=k % 2,
                       acc=(0.5, 0.6 + k / 10))
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["model"]["layers"] = [["Flatten"], ["Linear", width], ["ReLU"], ["Linear", 10]]
        config["train"].update(optimizer=optimizer, weight_decay=10.0 ** -(k + 2))
        config["data"].update(train_size=1000 * (k + 1),
                              root="/a/long/path/to/the/data/of/this/run/" + "x" * k)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "wide"


def _groups(text: str) -> list[list[str]]:
    """The runs' part of a text table (before the legend) as groups of lines."""
    return [group.splitlines() for group in text.split("\n\n") if group.startswith("name")]


def test_a_wide_table_wraps_in_column_groups_that_keep_every_cell(wide, cli):
    code, whole, err = cli("runs", wide, "--width", "0")
    assert code == 0, err
    (rows,) = _groups(whole)
    assert max(map(len, rows)) > 170, whole
    code, wrapped, err = cli("runs", wide, "--width", "60")
    assert code == 0, err
    groups = _groups(wrapped)
    assert len(groups) >= 4 and all(len(line) <= 60 for g in groups for line in g), wrapped
    # each group starts with the name column; read across the groups, each line is the
    # unwrapped line, cell for cell, none cut
    for i, line in enumerate(rows):
        assert all(g[i].split()[0] == line.split()[0] for g in groups)
        assert [line.split()[0], *(cell for g in groups for cell in g[i].split()[1:])] == \
            line.split()
    assert wrapped.split("\n\n")[-1] == whole.split("\n\n")[-1]  # the legend, once, at the end
    assert wrapped.count("model.layers = ") == 3
    code, narrowest, _ = cli("runs", wide, "--width", "10")  # a column wider than 10: whole
    assert "/a/long/path/to/the/data/of/this/run/xx" in narrowest
    assert len(_groups(narrowest)) == 13  # name and one column each: 7 keys and 6 of its own


def test_a_narrow_table_csv_and_json_never_wrap(wide, sweep, cli, monkeypatch):
    code, plain, _ = cli("runs", sweep)  # not a terminal: whole rows
    assert cli("runs", sweep, "--width", "200")[1] == plain
    assert "\n\n" not in plain.split("over seeds")[0].strip()
    for form in ("--csv", "--json"):
        assert cli("runs", wide, form, "--width", "20")[1] == cli("runs", wide, form)[1]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal 60 columns wide
    monkeypatch.setenv("COLUMNS", "60")
    assert cli("runs", wide)[1] == cli("runs", wide, "--width", "60")[1] != \
        cli("runs", wide, "--width", "0")[1]
    code, _, err = cli("runs", wide, "--width", "-1")
    assert code == 2 and "--width: expected 0 (never wrap) or more columns, found -1" in err
