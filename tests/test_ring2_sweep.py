"""`cnnkit sweep --jobs 2` with REAL children (`python -m cnnkit train` each): a 3-member grid
runs to the end, is killed and run again, and ends with the results of `--jobs 1`. Threads
are pinned to 1 on both sides: results on the CPU depend on the thread count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cnnkit.rundir.lock import is_locked
from tests.conftest import ROOT
from tests.test_sweep import TINY, assert_runs_equal

# 3 members on 2 jobs: two run at once and one waits for a slot, so the kill leaves runs
# interrupted and a run never started (each child imports torch: ~7 s of CPU apiece)
GRID = ["--grid", "train.lr=[0.005, 0.01, 0.02]", "--seeds", "0", "--threads", "1"]
NAMES = [f"lr={lr},seed=0" for lr in ("0.005", "0.01", "0.02")]
WAIT = 300  # seconds; never reached when healthy
CONFIG = {**TINY, "train": {**TINY["train"], "epochs": 2}}


def _sweep(config, out, *, jobs: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnkit", "sweep", str(config), *GRID,
                             "--out", str(out), "--jobs", str(jobs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # real children: each imports torch (about 7 s of CPU)
def test_jobs_2_with_real_children_killed_and_rerun_ends_as_jobs_1(tmp_path, write_config, cli):
    config = write_config(CONFIG)
    reference = tmp_path / "jobs1"
    assert cli("sweep", config, *GRID, "--out", reference)[0] == 0

    out = tmp_path / "jobs2"
    parent = _sweep(config, out, jobs=2)
    deadline = time.monotonic() + WAIT
    while not any((out / name / "last.pt").exists() for name in NAMES):
        assert parent.poll() is None, parent.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)  # the children get SIGTERM: they save and stop
    parent.wait(timeout=WAIT)
    while any(is_locked(out / name) for name in NAMES if (out / name).exists()):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    again = _sweep(config, out, jobs=2)
    printed, _ = again.communicate(timeout=WAIT)
    assert again.returncode == 0, printed
    assert "3 runs: 3 finished" in printed or "failed" not in printed, printed
    assert_runs_equal(out, reference, NAMES)
    assert not any((out / name / ".children").exists() for name in NAMES)
