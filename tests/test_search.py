"""`cnnkit sweep --search`: the space checked like --set, one-line errors, trials as run
directories with the pruner fed per epoch, and real processes sharing one study on a journal
file and on a real PostgreSQL server (CNNKIT_TEST_POSTGRES, started by .ci/run)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnnkit.config import load_config
from cnnkit.errors import RunPruned
from cnnkit.experiments.space import parse_dim
from cnnkit.rundir.lock import is_locked, read_manifest
from cnnkit.training.callbacks import Pruning
from tests.conftest import ROOT

optuna = pytest.importorskip("optuna", reason="the search extra: pip install -e '.[search]'")

TINY = {
    "model": {"input": [1, 28, 28],
              "layers": [["Conv2d", 1, 4, 5], ["ReLU"], ["MaxPool2d", 4], ["Flatten"],
                         ["Linear", 10]]},
    "data": {"name": "mnist-sample", "train_size": 200, "val_size": 100},
    "train": {"optimizer": "adam", "lr": 0.005, "batch_size": 50, "epochs": 1},
}
LR = "train.lr=loguniform(1e-4, 0.05)"


@pytest.fixture
def tiny(write_config):
    return write_config(TINY, name="tiny.yaml")


@pytest.mark.parametrize("item,kind,args", [
    ("train.lr=loguniform(1e-4, 0.1)", "loguniform", (1e-4, 0.1)),  # 1e-4: a YAML string
    ("train.weight_decay = uniform(0, 0.1)", "uniform", (0.0, 0.1)),
    ("train.epochs=int(1, 3)", "int", (1, 3)),
    ("train.batch_size=choice(64, 128)", "choice", (64, 128)),
    ("train.optimizer=choice(adam, sgd)", "choice", ("adam", "sgd")),
    ("train.lr=choice(1e-3, 0.01)", "choice", (1e-3, 0.01)),
])
def test_space_items_parse(item, kind, args):
    dim = parse_dim(item)
    assert (dim.kind, dim.args) == (kind, args)


@pytest.mark.parametrize("items,says", [
    (["train.lr=lognormal(1, 2)"], "unknown kind 'lognormal'"),
    (["train.lr=loguniform(0, 1)"], "low end above 0"),
    (["train.lr=uniform(0.1, 0.01)"], "must be below the high end"),
    (["train.epochs=int(1.5, 3)"], "whole numbers"),
    (["train.lr=uniform(0.1)"], "takes 2 values"),
    (["train.lr"], "expected KEY.PATH=KIND(ARGS)"),
    (["train.batch_size=choice(64, 64)"], "given twice"),
    (["train.lr=uniform(0.1, 0.2)", "train.lr=uniform(0.1, 0.3)"], "train.lr: given twice"),
    (["train.lrr=uniform(0.1, 0.2)"], "train.lrr"),  # checked like --set: did you mean
    (["train.batch_size=choice(64, big)"], "value 'big'"),
    (["train.label_smoothing=uniform(0, 1.5)"], "value 1.5"),  # out of its range
    ([], "at least one --space"),
])
def test_a_bad_space_is_one_line_before_any_trial(cli, tiny, tmp_path, items, says):
    args = [a for item in items for a in ("--space", item)]
    code, out, err = cli("sweep", tiny, "--search", "tpe", "--trials", "3", *args, "--out",
                         tmp_path / "s")
    assert code == 2 and err.startswith("cnnkit: error: ") and err.count("\n") == 1, err
    assert says in err
    assert not (tmp_path / "s").exists()


def test_trials_zero_no_optuna_and_an_unreachable_storage_are_one_line(
        cli, tiny, tmp_path, monkeypatch):
    code, _, err = cli("sweep", tiny, "--search", "random", "--trials", "0", "--space", LR,
                       "--out", tmp_path / "s")
    assert code == 2 and err == "cnnkit: error: --trials 0: expected at least 1 trial\n"
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://me:secret@127.0.0.1:{port}/none"
    code, _, err = cli("sweep", tiny, "--search", "tpe", "--trials", "2", "--space", LR,
                       "--storage", url, "--out", tmp_path / "s")
    assert code == 2 and err.count("\n") == 1, err
    assert f"--storage postgresql+psycopg://me:***@127.0.0.1:{port}/none: cannot open" in err
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    code, _, err = cli("sweep", tiny, "--search", "tpe", "--trials", "2", "--space", LR,
                       "--out", tmp_path / "s")
    assert code == 2 and err.count("\n") == 1, err
    assert "--search needs Optuna" in err and "pip install 'cnnkit[search]'" in err
    code, _, err = cli("sweep", tiny, "--space", LR, "--out", tmp_path / "s")
    assert code == 2 and "add --search random or --search tpe" in err


def test_a_pruned_run_saves_its_epoch_releases_its_lock_and_says_pruned(tiny, tmp_path):
    from cnnkit.training.trainer import train

    seen = []
    with pytest.raises(RunPruned, match="pruned after epoch 1: val_acc"):
        train(tiny, out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=3",),
              callbacks=[Pruning(lambda epoch, value: seen.append((epoch, value)) or True)])
    assert seen[0][0] == 1 and 0 <= seen[0][1] <= 1
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "pruned" and manifest["reason"].startswith("pruned after")
    assert not is_locked(tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.slow
def test_a_search_in_one_process(cli, tiny, tmp_path):
    out = tmp_path / "s"
    code, text, err = cli("sweep", tiny, "--search", "random", "--trials", "3", "--space", LR,
                          "--space", "train.batch_size=choice(25, 50)", "--out", out)
    assert code == 0, err
    assert "3 of 3 trials: 3 finished" in text
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0000", "trial-0001",
                                                           "trial-0002"]
    code, table, _ = cli("runs", out)
    assert code == 0 and table.count("finished") == 3
    header = table.splitlines()[0].split()
    assert "lr" in header and "status" in header and "best" in header
    code, best, _ = cli("runs", out, "--best-config")
    assert code == 0 and best.startswith("# the best of 3 finished runs")
    (tmp_path / "best.yaml").write_text(best)
    cfg = load_config(tmp_path / "best.yaml")  # what `cnnkit train best.yaml` reads
    values = {json.dumps([r.config["train"]["lr"], r.config["train"]["batch_size"]])
              for r in _records(out)}
    assert json.dumps([cfg.train.lr, cfg.train.batch_size]) in values
    study = _study(out)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    code, said, err = cli("plot", out, "--out", tmp_path / "by_key.png")
    assert code == 0 and said.endswith(": 3 trials\n"), err
    assert (tmp_path / "by_key.png").stat().st_size > 1000
    # the same command again: the study is full, nothing more is trained
    code, text, _ = cli("sweep", tiny, "--search", "random", "--trials", "3", "--space", LR,
                        "--space", "train.batch_size=choice(25, 50)", "--out", out)
    assert code == 0 and "[trial" not in text and len(_study(out).get_trials()) == 3
    code, _, err = cli("sweep", tiny, "--search", "random", "--trials", "4", "--space", LR,
                       "--out", out)
    assert code == 2 and "was started with other space, trials" in err


@pytest.mark.slow
def test_the_median_pruner_is_fed_every_epoch(tiny, tmp_path):
    from cnnkit.experiments.search import plan_search, run_search

    search = plan_search(tiny, space=[LR], sets=["train.epochs=2"], trials=2, method="tpe")
    never = optuna.pruners.ThresholdPruner(lower=2.0)  # val_acc is never 2: prune at once
    trials = run_search(search, tmp_path / "s", pruner=never, log=lambda line: None)
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert [list(t.intermediate_values) for t in trials] == [[1], [1]]
    for number in (0, 1):
        run = tmp_path / "s" / f"trial-{number:04d}"
        assert read_manifest(run)["status"] == "pruned" and not is_locked(run)


def _records(out: Path):
    from cnnkit.rundir.records import read_runs

    return read_runs([out])


def _study(out: Path, storage=None):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = storage or JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name=json.loads((out / "search.json").read_text())["study"],
                             storage=storage)


def _sweep(config: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cnnkit", "sweep", str(config), "--search", "tpe",
            "--space", LR, "--space", "train.weight_decay=uniform(0, 0.01)", "--out", str(out),
            *extra]
    with open(log, "w") as f:
        return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _two_workers(config: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    workers = [_sweep(config, out, tmp_path / f"w{i}.log", "--trials", "6", *extra)
               for i in (1, 2)]
    try:
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    logs = [(tmp_path / f"w{i}.log").read_text() for i in (1, 2)]
    assert codes == [0, 0], logs
    return logs


def _exactly_six(study, logs: list[str], out: Path) -> None:
    counted = [t for t in study.get_trials() if t.number < 6]
    assert [t.number for t in counted] == list(range(6))
    # finished, or ended early by the median pruner (past its 5 startup trials, which of the
    # two workers reports first decides whether trial 5 is pruned): never failed or running
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in counted), \
        [(t.number, t.state.name) for t in counted]
    surplus = [t for t in study.get_trials() if t.number >= 6]  # told FAIL at once, untrained
    assert all(t.user_attrs.get("cnnkit_surplus") for t in surplus)
    ran = [int(n) for log in logs for n in re.findall(r"^\[trial (\d+)/6\]", log, re.M)]
    assert sorted(ran) == list(range(6)), logs  # each trial trained once, by one worker
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{n:04d}" for n in range(6)]
    assert all(r.status in ("finished", "pruned") for r in _records(out))


@pytest.mark.slow
def test_two_processes_share_a_journal_file_and_run_exactly_six_trials(tiny, tmp_path):
    out = tmp_path / "s"
    logs = _two_workers(tiny, out, tmp_path)
    _exactly_six(_study(out), logs, out)


@pytest.mark.slow
def test_two_processes_share_a_postgresql_study(tiny, tmp_path):
    url = os.environ.get("CNNKIT_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: CNNKIT_TEST_POSTGRES is unset (.ci/run starts one "
                    "where PostgreSQL is installed)")
    url = _fresh_database(url)  # two workers that find it empty both create the tables
    out = tmp_path / "s"
    name = "shared"
    logs = _two_workers(tiny, out, tmp_path, "--storage", url, "--study", name)
    assert not (out / "study.journal").exists()
    study = optuna.load_study(study_name=name, storage=url)
    _exactly_six(study, logs, out)
    assert yaml.safe_load((out / "search.json").read_text())["storage"].startswith(
        "postgresql+psycopg://")


def _fresh_database(url: str) -> str:
    """A new, empty database on the server at `url`; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    name = f"cnnkit_test_{os.getpid()}_{time.time_ns()}"
    plain = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return server.set(database=name).render_as_string(hide_password=False)


@pytest.mark.slow
def test_a_killed_workers_trial_is_resumed_and_the_study_still_has_n(tiny, tmp_path):
    out = tmp_path / "s"
    slow = ["--trials", "2", "--set", "train.epochs=4", "--set", "data.train_size=1000"]
    first = _sweep(tiny, out, tmp_path / "w1.log", *slow)
    deadline = time.monotonic() + 120
    while not (out / "trial-0000" / "metrics.csv").exists():
        assert first.poll() is None, (tmp_path / "w1.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert read_manifest(out / "trial-0000")["status"] == "interrupted"
    done = len(_records(out)[0].history)
    again = _sweep(tiny, out, tmp_path / "w2.log", *slow)
    assert again.wait(timeout=300) == 0, (tmp_path / "w2.log").read_text()
    log = (tmp_path / "w2.log").read_text()
    assert "[trial 0] resuming" in log
    study = _study(out)
    assert [(t.number, t.state.name) for t in study.get_trials()] == [(0, "COMPLETE"),
                                                                      (1, "COMPLETE")]
    first_run = _records(out)[0]
    assert first_run.status == "finished" and len(first_run.history) == 4 and done >= 1
    assert "resum" in (out / "trial-0000" / "train.log").read_text()


def _kinds(tmp_path: Path) -> dict[str, dict]:
    from tests.conftest import LOCALIZATION_TINY
    from tests.imagefiles import write_class_folders

    root = write_class_folders(tmp_path / "folders")
    return {
        "digits": {**TINY, "train": {**TINY["train"], "epochs": 2}},
        "imagefolder": {"model": {"input": [3, 16, 16], "layers": [["Flatten"], ["Linear", 2]]},
                        "data": {"name": "imagefolder", "root": str(root), "image_size": 16,
                                 "workers": 0},
                        "train": {"batch_size": 4, "epochs": 2}},
        "localization": {**LOCALIZATION_TINY, "data": {**LOCALIZATION_TINY["data"],
                                                       "train_size": 100, "val_size": 50},
                         "train": {**LOCALIZATION_TINY["train"], "epochs": 2}},
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["digits", "imagefolder", "localization"])
def test_a_search_on_each_kind_of_run(kind, write_config, tmp_path, monkeypatch):
    from cnnkit.experiments.best import best_config
    from cnnkit.experiments.search import plan_search, run_search

    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(_kinds(tmp_path)[kind], name=f"{kind}.yaml")
    search = plan_search(config, space=[LR, "train.weight_decay=uniform(0, 0.01)"],
                         trials=2, method="tpe")
    trials = run_search(search, tmp_path / "s", log=lambda line: None)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [list(t.intermediate_values) for t in trials] == [[1, 2], [1, 2]]  # every epoch
    (tmp_path / "best.yaml").write_text(best_config(tmp_path / "s"))
    assert load_config(tmp_path / "best.yaml").train.lr in {t.params["train.lr"] for t in trials}
