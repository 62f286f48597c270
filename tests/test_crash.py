"""Reliability, for real: training runs in subprocesses killed with SIGKILL at chosen points
(inside a step, inside a checkpoint write), stopped with SIGTERM and SIGINT, and starved of
disk, then resumed; the final weights must equal, bit for bit, those of a run left alone.

The child is tests/crash_child.py: `cnnkit` plus hooks that pause it at a known point and
say so through a file, so the signal lands exactly there. Children are forked by one fork
server per module (tests/forkserver.py), which has imported torch once: a child starts in
milliseconds instead of ~7 s of imports, and is still a process of its own."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnkit.checkpoint import load_checkpoint
from cnnkit.rundir.lock import is_locked, lock_directory, read_manifest
from tests.conftest import ROOT, SMALL_CONV, untimed
from tests.forkserver import ForkServer, Subprocesses

# 3 epochs of 10 steps (500 digits, batch 50), dropout for randomness, Adam, a mid-epoch
# checkpoint every 4 steps; the child swaps in OneCycleLR, a schedule with state.
CONFIG = {
    "model": {**SMALL_CONV["model"], "layers": [*SMALL_CONV["model"]["layers"][:-1],
                                                ["Dropout", 0.3], ["Linear", 10]]},
    "data": {"name": "mnist-sample", "train_size": 500, "val_size": 100},
    "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 50, "epochs": 3, "seed": 7,
              "device": "cpu", "checkpoint_every_steps": 4},
}
WAIT = 300  # seconds; generous because the machine may be shared, never reached when healthy
SCRIPT = ROOT / "tests" / "crash_child.py"
ENV = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LAUNCHER: list = []  # the module's, set by the fixture below


class _FirstSpawn:
    """The module's launcher, started by its first child: a module whose selected tests start
    none (`-m 'not slow'` in test_folder_recipe) pays no server importing torch."""

    def __init__(self, start):
        self.start, self.started = start, None

    def spawn(self, *args, **kwargs):
        if self.started is None:
            self.started = self.start()
        return self.started.spawn(*args, **kwargs)

    def close(self) -> None:
        if self.started is not None:
            self.started.close()


@pytest.fixture(scope="module", autouse=True)
def launcher(tmp_path_factory):
    """A fork server on Linux; elsewhere (no fork, or fork unsafe after torch has loaded, as
    on macOS) or with CNNKIT_TEST_FORKSERVER=0, a fresh interpreter per child."""
    if sys.platform == "linux" and os.environ.get("CNNKIT_TEST_FORKSERVER") != "0":
        log = tmp_path_factory.mktemp("forkserver") / "server.log"
        LAUNCHER.append(_FirstSpawn(lambda: ForkServer(SCRIPT, env={**os.environ, **ENV},
                                                       log=log, timeout=WAIT)))
    else:
        LAUNCHER.append(Subprocesses(SCRIPT))
    yield
    LAUNCHER.pop().close()


class Child:
    """`cnnkit train CONFIG --out RUN ...` in a process of its own, with crash_child's hooks;
    `file_size_limit` (bytes) caps the files it writes, as a full disk would."""

    def __init__(self, tmp: Path, run: str, *args: str, file_size_limit: int | None = None,
                 **hooks: str):
        self.hooks = tmp / f"hooks-{run}-{len(list(tmp.glob('hooks-*')))}"
        self.hooks.mkdir()
        env = {**os.environ, **ENV, "CNNKIT_HOOKS": str(self.hooks),
               "CNNKIT_SCHEDULER": "onecycle", **hooks}
        config = tmp / "config.yaml"
        if not config.exists():
            config.write_text(yaml.safe_dump(CONFIG))
        self.process = LAUNCHER[0].spawn(
            ["train", str(config), "--out", str(tmp / run), "--quiet", *args], env=env,
            cwd=tmp, stdout=self.hooks / "stdout", stderr=self.hooks / "stderr",
            status=self.hooks / "status", file_size_limit=file_size_limit)

    def wait_paused(self) -> None:
        deadline = time.monotonic() + WAIT
        while not (self.hooks / "paused").exists():
            if self.process.poll() is not None:
                raise AssertionError(f"child ended before its hook: {self.stderr()}")
            assert time.monotonic() < deadline, "child never reached its hook"
            time.sleep(0.05)

    def go(self) -> None:
        (self.hooks / "go").touch()

    def finish(self) -> tuple[int, str]:
        code = self.process.wait(timeout=WAIT)
        return code, self.stderr()

    def stderr(self) -> str:
        return (self.hooks / "stderr").read_text()


def run_to_end(tmp: Path, run: str, *args: str, **hooks) -> str:
    code, err = Child(tmp, run, *args, **hooks).finish()
    assert code == 0, err
    return err


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final weights, optimizer and scheduler state, and metrics history, bit for bit."""
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for name, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][name]), name
    for k, state in ca["optimizer"]["state"].items():
        assert all(torch.equal(v, cb["optimizer"]["state"][k][n]) for n, v in state.items())
    assert ca["scheduler"]["last_epoch"] == cb["scheduler"]["last_epoch"] == 30
    assert untimed(ca["history"]) == untimed(cb["history"])
    assert (a / "metrics.csv").read_text().count("\n") == 4


def no_temporary_files(run: Path) -> bool:
    return not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run left alone."""
    tmp = tmp_path_factory.mktemp("reference")
    run_to_end(tmp, "run")
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize(("hook", "value", "saved_at"), [
    ("CNNKIT_PAUSE_STEP", "17", (1, 6)),  # inside step 7 of epoch 2; last save after its step 6
    ("CNNKIT_PAUSE_STEP", "21", (2, 0)),  # inside the first step of epoch 3
    ("CNNKIT_PAUSE_SAVE", "5", (1, 0)),  # writing the epoch-2 step-2 save; last.pt: epoch 1
    ("CNNKIT_PAUSE_SAVE", "3", (0, 8)),  # writing best.pt at the end of epoch 1
])
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, hook, value, saved_at):
    child = Child(tmp_path, "run", **{hook: value})
    child.wait_paused()
    child.process.send_signal(signal.SIGKILL)
    code, _ = child.finish()
    assert code == -signal.SIGKILL
    run = tmp_path / "run"
    checkpoint = load_checkpoint(run / "last.pt", for_resume=True)  # complete, not partial
    assert (checkpoint["epoch"], checkpoint["step"]) == saved_at
    if hook == "CNNKIT_PAUSE_SAVE":
        assert not no_temporary_files(run)  # the killed write's half file is there
    run_to_end(tmp_path, "run", "--resume")
    assert no_temporary_files(run)
    assert_same_run(reference, run)


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_exits_143_and_resume_is_bit_identical(reference, tmp_path):
    child = Child(tmp_path, "run", CNNKIT_PAUSE_STEP="13")  # inside epoch 2, step 3
    child.wait_paused()
    child.process.send_signal(signal.SIGTERM)
    child.go()
    code, err = child.finish()
    assert code == 143, err
    assert "stopped by SIGTERM at epoch 2, step 3" in err
    resume_line = next(line for line in err.splitlines() if line.startswith("resume with: "))
    assert resume_line.endswith(f"--out {tmp_path / 'run'} --resume")
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt", for_resume=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3)
    run_to_end(tmp_path, "run", "--resume")
    assert_same_run(reference, tmp_path / "run")


@pytest.mark.slow
def test_sigint_saves_and_exits_130(tmp_path):
    child = Child(tmp_path, "run", CNNKIT_PAUSE_STEP="2")
    child.wait_paused()
    child.process.send_signal(signal.SIGINT)
    child.go()
    code, err = child.finish()
    assert code == 130, err
    assert "stopped by SIGINT at epoch 1, step 2" in err and "--resume" in err
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt", for_resume=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (0, 2)
    assert no_temporary_files(tmp_path / "run")


@pytest.mark.slow
def test_failed_save_keeps_the_old_checkpoint_and_exits_nonzero(tmp_path):
    run_to_end(tmp_path, "run", "--set", "train.epochs=1", CNNKIT_SCHEDULER="none")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert len(before) > 32 * 1024
    # files may not grow past 32 KiB, a full disk for a checkpoint of ~90 KiB: writes fail
    # with EFBIG (SIGXFSZ ignored)
    code, err = Child(tmp_path, "run", "--resume", file_size_limit=32 * 1024,
                      CNNKIT_SCHEDULER="none").finish()
    assert code == 2, err
    lines = [line for line in err.splitlines() if "FitWarning" not in line]  # the tiny config's
    assert len(lines) == 1 and "last.pt: cannot save (File too large)" in lines[0], err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    assert no_temporary_files(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_directory_keeps_the_old_checkpoint(tmp_path):
    run_to_end(tmp_path, "run", "--set", "train.epochs=1", CNNKIT_SCHEDULER="none")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "run").chmod(0o555)
    try:
        code, err = Child(tmp_path, "run", "--resume", CNNKIT_SCHEDULER="none").finish()
    finally:
        (tmp_path / "run").chmod(0o755)
    assert code == 2 and err.count("\n") == 1 and "cannot save" in err, err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.slow  # two real processes
def test_two_writers_racing_into_one_directory_one_is_refused(tmp_path):
    """Two real processes started together into the same --out: one trains (it is held at
    its first step to make the race last), the other exits 2 at once naming the holder; the
    run that finishes is whole."""
    pair = [Child(tmp_path, "run", CNNKIT_PAUSE_STEP="1") for _ in range(2)]
    deadline = time.monotonic() + WAIT
    while all(child.process.poll() is None for child in pair):
        assert time.monotonic() < deadline, "neither child was refused"
        time.sleep(0.05)
    loser = next(child for child in pair if child.process.poll() is not None)
    winner = next(child for child in pair if child is not loser)
    code, err = loser.finish()
    err = "".join(line for line in err.splitlines(keepends=True) if "FitWarning" not in line)
    assert code == 2 and err.count("\n") == 1, err  # one line, a fit warning aside
    assert f"run directory {tmp_path / 'run'} is in use by process {winner.process.pid} on " \
        in err
    winner.wait_paused()
    winner.go()
    assert winner.finish()[0] == 0
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["pid"] == winner.process.pid
    assert manifest["epoch"] == manifest["epochs"] == 3


@pytest.mark.slow  # a child process trained, then killed: ~7 s
def test_sigkill_releases_the_lock_and_the_run_reads_as_interrupted(tmp_path):
    child = Child(tmp_path, "run", CNNKIT_PAUSE_STEP="6")
    child.wait_paused()
    assert is_locked(tmp_path / "run")
    assert read_manifest(tmp_path / "run")["status"] == "running"
    child.process.send_signal(signal.SIGKILL)
    child.finish()
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "interrupted" and "killed" in manifest["reason"]
    with lock_directory(tmp_path / "run"):  # free: the kernel dropped the flock
        pass
    run_to_end(tmp_path, "run", "--resume")
    assert read_manifest(tmp_path / "run")["status"] == "finished"


def test_kill_before_the_first_checkpoint_leaves_a_run_that_resumes(tmp_path):
    """Killed inside its first write of last.pt: the temp file is removed on the next start,
    and `cnnkit resume RUN` starts the run over from its recorded config."""
    child = Child(tmp_path, "run", CNNKIT_PAUSE_SAVE="1")
    child.wait_paused()
    child.process.send_signal(signal.SIGKILL)
    child.finish()
    run = tmp_path / "run"
    assert not (run / "last.pt").exists() and list(run.glob(".last.pt.*.tmp"))
    hooks = tmp_path / "hooks-resume"
    hooks.mkdir()
    process = LAUNCHER[0].spawn(["resume", str(run), "--quiet"], env={**os.environ, **ENV,
                                "CNNKIT_SCHEDULER": "onecycle"}, cwd=tmp_path,
                                stdout=hooks / "stdout", stderr=hooks / "stderr",
                                status=hooks / "status", file_size_limit=None)
    assert process.wait(timeout=WAIT) == 0, (hooks / "stderr").read_text()
    assert not list(run.glob(".*.tmp")) and (run / "last.pt").is_file()
    assert read_manifest(run)["status"] == "finished"


def test_sigint_while_torch_imports_is_one_line_exit_130(tmp_path):
    """Ctrl-C in the first second of `python -m cnnkit train` (torch still importing)."""
    import subprocess

    # SIGINT at its default, as a shell starts a command: a worker process that ignores it
    # (SIG_IGN is inherited across exec) would hand the child an ignored Ctrl-C
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "train", "x.yaml"], cwd=tmp_path,
                               env={**os.environ, **ENV}, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.6)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=WAIT)[1]
    assert process.returncode == 130 and err == "cnnkit: interrupted\n", err
