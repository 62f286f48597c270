"""`cnnkit sweep`: a 2 × 2 grid with 2 seeds on a tiny config; the same sweep killed with
SIGKILL inside a run and run again ends bit for bit where the uninterrupted one did, without
retraining what was finished; a failing value is recorded and the others complete; bad input
is one line, exit 2, and starts nothing."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnnkit.checkpoint import load_checkpoint
from cnnkit.errors import ConfigError
from cnnkit.experiments.names import distinct_tails, key_columns, run_name
from cnnkit.experiments.sweep import parse_grid, plan_sweep
from cnnkit.rundir.metrics import read_metrics
from tests.conftest import ROOT, untimed
from tests.forkserver import ForkServer, Subprocesses

# 100 digits in batches of 50 or 100: 2 or 1 steps a run, last.pt saved after every step
TINY = {
    "model": {"input": [1, 28, 28], "layers": [["Conv2d", 1, 4, 5], ["ReLU"], ["MaxPool2d", 4],
                                               ["Flatten"], ["Linear", 10]]},
    "data": {"name": "mnist-sample", "train_size": 100, "val_size": 50},
    "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 50, "epochs": 1, "device": "cpu",
              "checkpoint_every_steps": 1},
}
GRID = ["--grid", "train.lr=[0.005, 0.02]", "--grid", "train.batch_size=[50, 100]",
        "--seeds", "0", "1", "--threads", "1"]
NAMES = [f"lr={lr},batch_size={bs},seed={seed}" for lr in ("0.005", "0.02")
         for bs in (50, 100) for seed in (0, 1)]
WAIT = 300  # seconds; never reached when healthy
ENV = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep_config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(config, tmp_path_factory) -> Path:
    """The 2 × 2 × 2 sweep left alone, run in this process."""
    from cnnkit.cli import main

    out = tmp_path_factory.mktemp("swept") / "sweep"
    code = main(["sweep", str(config), *GRID, "--out", str(out)])
    assert code == 0
    return out


def test_a_grid_with_seeds_is_one_run_each_named_by_its_values(swept, config):
    out = swept
    sweep = json.loads((out / "sweep.json").read_text())
    assert list(sweep["runs"]) == NAMES
    assert sweep["runs"]["lr=0.02,batch_size=100,seed=1"]["overrides"] == [
        "train.lr=0.02", "train.batch_size=100", "train.seed=1"]
    assert all(entry["threads"] == 1 for entry in sweep["runs"].values())
    for name in NAMES:
        saved = yaml.safe_load((out / name / "config.yaml").read_text())["train"]
        assert f"lr={saved['lr']},batch_size={saved['batch_size']},seed={saved['seed']}" == name
        assert len(read_metrics(out / name)) == 1


def test_run_again_skips_what_is_finished(swept, config, cli):
    out = swept
    stamps = {name: (out / name / "last.pt").stat().st_mtime_ns for name in NAMES}
    code, printed, err = cli("sweep", config, *GRID, "--out", out)
    assert code == 0, err
    assert printed.count("skipped, finished") == 8 and "0 to run" in printed
    assert stamps == {name: (out / name / "last.pt").stat().st_mtime_ns for name in NAMES}


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """A fork server of tests/crash_child.py (cnnkit with test hooks) on Linux, else a fresh
    interpreter per child, as in test_crash.py."""
    if sys.platform == "linux" and os.environ.get("CNNKIT_TEST_FORKSERVER") != "0":
        log = tmp_path_factory.mktemp("forkserver") / "server.log"
        server = ForkServer(ROOT / "tests" / "crash_child.py", env={**os.environ, **ENV},
                            log=log, timeout=WAIT)
    else:
        server = Subprocesses(ROOT / "tests" / "crash_child.py")
    yield server
    server.close()


@pytest.mark.slow
def test_a_sweep_killed_inside_a_run_ends_bit_identical(swept, config, launcher, tmp_path,
                                                       cli):
    """SIGKILL inside optimizer step 4 of the sweep process: the second step of run 2, after
    its mid-epoch save. Run again, it skips run 1 and resumes run 2 from that save."""
    reference = swept
    out, hooks = tmp_path / "sweep", tmp_path / "hooks"
    hooks.mkdir()
    child = launcher.spawn(["sweep", str(config), *GRID, "--out", str(out)],
                           env={**os.environ, **ENV, "CNNKIT_HOOKS": str(hooks),
                                "CNNKIT_PAUSE_STEP": "4"},
                           cwd=tmp_path, stdout=hooks / "stdout", stderr=hooks / "stderr",
                           status=hooks / "status")
    deadline = time.monotonic() + WAIT
    while not (hooks / "paused").exists():
        assert child.poll() is None, (hooks / "stderr").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=WAIT) == -signal.SIGKILL
    saved = load_checkpoint(out / NAMES[1] / "last.pt", for_resume=True)
    assert (saved["epoch"], saved["step"]) == (0, 1)  # killed mid-epoch, after one step
    finished = (out / NAMES[0] / "last.pt").stat().st_mtime_ns

    code, printed, err = cli("sweep", config, *GRID, "--out", out)
    assert code == 0, err
    assert f"[1/8] {NAMES[0]}: skipped, finished" in printed and "7 to run" in printed
    assert (out / NAMES[0] / "last.pt").stat().st_mtime_ns == finished
    assert_runs_equal(out, reference, NAMES)


def assert_runs_equal(out: Path, reference: Path, names: list[str]) -> None:
    """Each run's last.pt in `out` has the weights and (untimed) history of `reference`'s."""
    for name in names:
        ours = load_checkpoint(out / name / "last.pt")
        theirs = load_checkpoint(reference / name / "last.pt")
        for key, tensor in theirs["model"].items():
            assert tensor.equal(ours["model"][key]), (name, key)
        assert untimed(ours["history"]) == untimed(theirs["history"]), name


def test_a_failing_value_is_recorded_and_the_others_complete(config, tmp_path, cli):
    out = tmp_path / "sweep"
    args = ("sweep", config, "--grid", "train.lr=[1000.0, 0.01]", "--set", "train.optimizer=sgd",
            "--set", "train.momentum=0.0", "--set", "train.epochs=3", "--out", out,
            "--threads", "1")
    code, printed, err = cli(*args)
    assert code == 1, err
    sweep = json.loads((out / "sweep.json").read_text())
    reason = sweep["runs"]["lr=1000.0"]["failed"]
    assert reason.startswith("train loss "), reason
    assert "\n" not in reason and f"lr=1000.0: failed: {reason}" in printed
    assert "lr=0.01: finished" in printed and "2 runs: 1 failed, 1 finished" in printed
    code, printed, _ = cli(*args)  # run again: the failure stands, nothing is retrained
    assert code == 1 and "0 to run" in printed and f"skipped, failed: {reason}" in printed


@pytest.mark.parametrize(("args", "message"), [
    (["--grid", "train.lrr=[0.1, 0.2]"], "--grid train.lrr: value 0.1: "),
    (["--grid", "train.lr=[]"], "--grid 'train.lr=[]': the list of values is empty"),
    (["--grid", "train.batch_size=[10, ten]"], "batch_size: expected an integer, found 'ten'"),
    (["--grid", "train.lr=0.1"], "expected a YAML list of values"),
    (["--grid", "train.seed=[1, 2]", "--seeds", "0"], "--grid train.seed and --seeds"),
    (["--grid", f"train.lr={[0.001 * i for i in range(1, 12)]}", "--grid",
      f"train.batch_size={list(range(1, 11))}", "--seeds", *map(str, range(10))],
     "the grid makes 1,100 runs (more than 1,000); pass --yes"),
    (["--set", "train.optimizer=sgd", "--grid", "train.nesterov=[false, true]", "--grid",
      "train.momentum=[0.9, 0.0]"], "run nesterov=true,momentum=0.0: "),  # a cross-key rule
])
def test_bad_input_is_one_line_and_starts_nothing(config, tmp_path, cli, args, message):
    code, printed, err = cli("sweep", config, *args, "--out", tmp_path / "sweep")
    assert code == 2 and err.startswith("cnnkit: error: ") and message in err, err
    assert err.count("\n") == 1 and not printed
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_in_use_is_refused(config, tmp_path, cli):
    out = tmp_path / "sweep"
    out.mkdir()
    with open(out / ".sweep.lock", "w") as held:  # another sweep of the same folder
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242 otherhost\n")
        held.flush()
        code, _, err = cli("sweep", config, "--seeds", "0", "--out", out)
    assert code == 2 and f"sweep directory {out} is in use by process 4242 on otherhost" in err
    assert list(out.iterdir()) == [out / ".sweep.lock"]


def test_grid_values_are_yaml_lists_and_names_are_safe_folders(config):
    assert parse_grid("model.input=[[1,28,28],[1,32,32]]") == (
        "model.input", [[1, 28, 28], [1, 32, 32]])
    plan = plan_sweep(config, grids=["model.input=[[1,28,28],[1,32,32]]",
                                     "data.val_size=[50, 20]"])
    assert [m.name for m in plan.members] == [
        "input=[1,28,28],val_size=50", "input=[1,28,28],val_size=20",
        "input=[1,32,32],val_size=50", "input=[1,32,32],val_size=20"]
    assert plan.members[3].overrides == ["model.input=[1, 32, 32]", "data.val_size=20"]
    assert run_name([("weights", "runs/a b/best.pt")]) == "weights=runs_a_b_best.pt"
    long = run_name([("layers", list(range(60)))], digest_of="x")
    assert len(long) == 80 and "/" not in long and long.endswith("~" + long[-8:])
    assert key_columns(["train.lr", "train.seed", "data.augment.seed"]) == [
        "lr", "train.seed", "augment.seed"]
    assert distinct_tails([("runs", "a", "x"), ("runs", "b", "x"), ("runs", "y")]) == [
        "a/x", "b/x", "y"]
    with pytest.raises(ConfigError, match="given twice"):
        plan_sweep(config, grids=["train.lr=[0.1]", "train.lr=[0.2]"])


def test_jobs_run_members_at_once_each_a_process_with_its_thread_share(config, tmp_path, cli,
                                                                     monkeypatch):
    """--jobs 2 starts `PYTHON -m cnnkit train ...` per member, two at a time. PYTHON is a
    stand-in here that logs what it was given and fails, as a real child's import of torch
    costs ~9 s of CPU (the real child, checked by hand: `--jobs 2 --threads 1` trains
    bit-identical weights to `--jobs 1 --threads 1`)."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\ndate +%s.%N >> \"$STAMPS/start\"\nsleep 0.5\n"
                      "date +%s.%N >> \"$STAMPS/end\"\n"
                      "echo \"cnnkit: error: threads=$OMP_NUM_THREADS $*\"\nexit 2\n")
    python.chmod(0o755)
    monkeypatch.setattr("cnnkit.experiments.sweep.sys.executable", str(python))
    monkeypatch.setenv("STAMPS", str(tmp_path))
    out = tmp_path / "sweep"
    code, printed, err = cli("sweep", config, "--grid", "train.lr=[0.1, 0.2, 0.3]", "--out",
                             out, "--jobs", "2", "--threads", "1")
    assert code == 1, err
    assert "3 to run, 2 at a time, 1 thread each" in printed and "3 runs: 3 failed" in printed
    sweep = json.loads((out / "sweep.json").read_text())
    for lr in ("0.1", "0.2", "0.3"):
        assert sweep["runs"][f"lr={lr}"]["failed"] == (
            f"threads=1 -m cnnkit train {config} --out {out / f'lr={lr}'} --quiet "
            f"--set train.lr={lr}")
    starts = sorted(map(float, (tmp_path / "start").read_text().split()))
    ends = sorted(map(float, (tmp_path / "end").read_text().split()))
    assert starts[1] < ends[0] and starts[2] >= ends[0]  # two at once, the third after
