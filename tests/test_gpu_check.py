"""scripts/gpu_check.sh, the prepared GPU check: its CPU dry run for real (a child process
that runs every step with CPU stand-ins), and its recovery from a step that hangs or dies
(the driver records it and the shell starts the driver again after it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["machine", "cuda-tests", "bench", "mnist-30", "folders", "compile", "amp",
         "deterministic", "oom", "ddp"]
ROW = r"^(\S+) +(pass|skip|fail) +([\d.]+) s  (.*)$"  # a row of the final table


def table(stdout: str, mode: str) -> dict[str, tuple[str, float, str]]:
    """The final table: step -> (status, seconds, detail), in its order."""
    rows = re.findall(ROW, stdout.split(f"\nsummary ({mode}, ", 1)[1], re.M)
    return {name: (status, float(seconds), detail) for name, status, seconds, detail in rows}


def test_help_names_every_option_and_step():
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: scripts/gpu_check.sh")
    for word in ("--cpu-dry-run", "--steps", "--budget", "$OUT", *STEPS):
        assert word in done.stdout


# the driver with its steps swapped for four that pass, hang, die and pass: the watchdog, the
# exit status the shell restarts on and --resume run for real, in a second and no torch
FAKE_PYTHON = """#!/bin/sh
exec "{python}" - "$@" <<'PY'
import os, signal, sys, time
sys.path.insert(0, "{scripts}")
import gpu_check

def first(check, timeout):
    check.facts["gpus"] = 7  # what a later step reads must survive the restarts
    return "pass", "fine"

def after(check, timeout):
    return "pass", "gpus %s" % check.facts.get("gpus")

def hang(check, timeout):
    time.sleep(3600)

def die(check, timeout):
    os.kill(os.getpid(), signal.SIGKILL)

gpu_check.STEPS[:] = [("first", 60, first), ("hangs", 1, hang), ("dies", 60, die),
                      ("after", 60, after)]
sys.exit(gpu_check.main(sys.argv[2:]))
PY
"""


def test_a_step_that_hangs_or_dies_is_a_failed_row_and_the_next_step_runs(tmp_path):
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable, scripts=ROOT / "scripts"))
    python.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), str(python)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OUT": str(out),
                                            "TMPDIR": str(tmp_path)})
    assert done.returncode == 1, done.stdout + done.stderr  # a step failed
    assert done.stdout.count("starting it again after that step") == 2
    rows = table(done.stdout, "cuda")
    assert list(rows) == ["first", "hangs", "dies", "after"]
    assert [status for status, *_ in rows.values()] == ["pass", "fail", "fail", "pass"]
    assert rows["hangs"][2].startswith("hung: no end within its 1 s timeout")
    assert rows["dies"][2].startswith("hung: the driver was killed inside this step")
    assert rows["after"][2] == "gpus 7"  # started twice since `first` ran
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["done"] and [s["name"] for s in summary["steps"]] == list(rows)
    assert "[ 4/4] after" in (out / "gpu_check.log").read_text()
    assert not list(tmp_path.glob("cnnkit-gpu-check-*"))  # the temporary folder is gone


@pytest.mark.slow  # a fresh interpreter, a pytest and a bench.py child, 9 tiny steps: ~60 s
def test_cpu_dry_run_passes_or_skips_every_step(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-dry-run", sys.executable],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OUT": str(out), "TMPDIR": str(tmp_path),
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    rows = table(done.stdout, "cpu-dry-run")
    assert list(rows) == STEPS
    assert {status for status, *_ in rows.values()} <= {"pass", "skip"}
    assert all(seconds >= 0 for _, seconds, _ in rows.values())
    assert rows["ddp"][0] == "skip" and "DDP needs 2" in rows["ddp"][2]
    for stubbed in ("compile", "oom"):  # the step line says so
        assert rows[stubbed][2].startswith("stubbed on CPU"), rows[stubbed]
    assert "cnnkit: error: cpu ran out of memory" in rows["oom"][2]
    assert "GradScaler state in last.pt" in rows["amp"][2]
    assert "two runs equal bit for bit" in rows["deterministic"][2]
    assert re.search(r"every cuda test skips", rows["cuda-tests"][2])
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["mode"] == "cpu-dry-run" and summary["done"]
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert sorted(p.name for p in out.iterdir()) == ["bench.md", "gpu_check.json",
                                                      "gpu_check.log"]
    assert "<!-- bench:start cpu -->" in (out / "bench.md").read_text()
    assert not list(tmp_path.glob("cnnkit-gpu-check-*"))
