"""The run directory as a unit, in-process: the manifest, folders that are not runs, a run's
own config, `cnnkit resume`, the epochs rules, stale temporaries, odd paths, the lock without
flock and across fork. (Real racing processes and SIGKILL: tests/test_crash.py.)"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time

import pytest
import yaml

import cnnkit.rundir.lock as rundir
from cnnkit.atomic import _host
from cnnkit.errors import CnnkitError
from cnnkit.rundir.lock import is_locked, lock_directory, read_manifest
from tests.conftest import SMALL_CONV

QUICK = {**SMALL_CONV, "data": {"name": "mnist-sample", "train_size": 100, "val_size": 50},
         "train": {"batch_size": 50, "epochs": 1, "device": "cpu"}}


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_users_folder_is_refused_and_left_byte_identical(cli, write_config, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my notes\n")
    (mine / "best.pt").write_bytes(b"my weights")
    before = _snapshot(mine)
    code, _, err = cli("train", write_config(QUICK), "--out", mine)
    assert code == 2 and "is not a cnnkit run directory (no run.json)" in err
    assert _snapshot(mine) == before and sorted(os.listdir(mine)) == ["best.pt", "config.yaml"]
    code, _, err = cli("train", write_config({**QUICK, "out": str(mine)}, name="out.yaml"))
    assert code == 2 and "not a cnnkit run directory" in err and _snapshot(mine) == before


def test_the_manifest_of_a_finished_run_and_resume_from_its_config(cli, write_config, tmp_path,
                                                                   monkeypatch):
    """`train RUN/config.yaml --resume` resumes RUN (not the config's `out:`), may extend
    a constant schedule, and refuses fewer epochs than were done."""
    monkeypatch.chdir(tmp_path)
    config = write_config({**QUICK, "out": "elsewhere"})
    assert cli("train", config, "--out", "run", "--quiet")[0] == 0
    manifest = read_manifest(tmp_path / "run")
    assert manifest["format"] == 1 and manifest["status"] == "finished"
    assert manifest["command"] == ["cnnkit", "train", str(config), "--out", "run", "--quiet"]
    assert (manifest["epoch"], manifest["epochs"], manifest["reason"]) == (1, 1, None)
    assert manifest["pid"] == os.getpid() and manifest["host"] == socket.gethostname()
    assert manifest["created"].endswith("Z") and manifest["config"] == "config.yaml"
    code, _, err = cli("train", "run/config.yaml", "--resume", "--set", "train.epochs=2",
                       "--quiet")
    assert code == 0, err
    assert not (tmp_path / "elsewhere").exists()
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    assert read_manifest("run")["epochs"] == 2
    code, _, err = cli("resume", "run/last.pt", "--set", "train.epochs=1")
    assert code == 2 and "train.epochs 1 is fewer than the 2 epochs this run has done" in err


def test_cosine_runs_cannot_change_their_length(cli, write_config, tmp_path):
    cosine = {**QUICK, "train": {**QUICK["train"], "schedule": {"name": "cosine"}}}
    assert cli("train", write_config(cosine), "--out", tmp_path / "run", "--quiet")[0] == 0
    code, _, err = cli("resume", tmp_path / "run", "--set", "train.epochs=2")
    assert code == 2 and "the cosine schedule lays its learning rate over all 1 planned" in err
    code, _, err = cli("resume", tmp_path / "run", "--set", "train.weight_decay=0.1")
    assert code == 2 and "differs from the run's at train.weight_decay" in err
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and not is_locked(tmp_path / "run")


def test_resume_needs_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("resume", tmp_path / "empty")
    assert code == 2 and "not a run directory to resume (no config.yaml)" in err


def test_stale_temporaries_go_on_a_fresh_start(cli, write_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({  # as a run killed before its first save
        "format": 1, "status": "running", "pid": 999999999, "host": _host(), "epoch": 0,
        "epochs": 1, "command": ["cnnkit"], "created": "2026-01-01T00:00:00Z",
        "config": "config.yaml"}))
    stale = run / f".last.pt.999999999@{_host()}.cnnkit.tmp"  # no such process
    stale.write_bytes(b"half a checkpoint")
    assert cli("train", write_config(QUICK), "--out", run, "--quiet")[0] == 0
    assert not stale.exists() and (run / "last.pt").is_file()


def test_a_non_utf8_config_and_run_name_end_to_end(cli, tmp_path):
    name = os.fsdecode(b"caf\xe9")
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(QUICK))
    run = tmp_path / f"run-{name}"
    code, out, err = cli("train", config, "--out", run)
    assert code == 0, err
    assert (run / "curves.png").stat().st_size > 0 and "caf\ufffd" in out
    assert "caf\ufffd" in (run / "train.log").read_text(encoding="utf-8")
    code, out, err = cli("plot", run, "--out", tmp_path / f"{name}.png", "--metric", "val_loss")
    assert code == 0 and (tmp_path / f"{name}.png").is_file(), err


def test_writing_under_a_regular_file_is_one_line(cli, trained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    run = trained_run[1].out_dir
    code, _, err = cli("plot", run, "--out", tmp_path / "file" / "p.png")
    assert code == 2 and err.count("\n") == 1 and "cannot save (Not a directory)" in err
    code, _, err = cli("visualize", run / "best.pt", "filters", "--out",
                       tmp_path / "file" / "f.png")
    assert code == 2 and err.count("\n") == 1 and "cannot save (Not a directory)" in err


def test_readers_are_not_writers(cli, trained_run, tmp_path):
    """plot and eval read a run that some process is training (its lock held)."""
    run = trained_run[1].out_dir
    with lock_directory(run):
        assert cli("plot", run, "--out", tmp_path / "c.png")[0] == 0
        assert cli("eval", run / "best.pt")[0] == 0


def test_the_lock_is_exclusive_and_dropped_on_close(tmp_path):
    with lock_directory(tmp_path):
        assert is_locked(tmp_path)
        (tmp_path / "run.json").write_text(f'{{"pid": {os.getpid()}, "host": "h1"}}')
        with pytest.raises(CnnkitError, match=f"in use by process {os.getpid()} on h1"):
            lock_directory(tmp_path, wait=0)
    assert not is_locked(tmp_path)
    lock_directory(tmp_path).close()


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """DataLoader workers are forked and inherit descriptors: the lock must not live on in
    them once the training process lets it go."""
    lock = lock_directory(tmp_path)
    ready, started = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: outlives the parent's hold on the lock
        os.write(started, b"x")  # after the fork hooks ran
        time.sleep(3)
        os._exit(0)
    try:
        os.read(ready, 1)
        lock.close()
        assert not is_locked(tmp_path)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(started)


def test_without_flock_a_lock_record_stands_in(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_flock)
    with lock_directory(tmp_path):
        assert (tmp_path / ".cnnkit.lock").read_text().split()[0] == str(os.getpid())
        assert is_locked(tmp_path)
        with pytest.raises(CnnkitError, match=f"in use by process {os.getpid()} on "):
            lock_directory(tmp_path)
    assert not (tmp_path / ".cnnkit.lock").exists() and not is_locked(tmp_path)
    (tmp_path / ".cnnkit.lock").write_text(f"999999999 {socket.gethostname()}\n")  # dead
    lock_directory(tmp_path).close()
