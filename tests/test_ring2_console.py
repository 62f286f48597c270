"""A closed stdout (`cnnkit train ... | head -1`) ends the printed lines, not the run: the
real command in a real pipe whose reader has gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_sweep import TINY

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # a fresh interpreter importing torch per command
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_closed_stdout_does_not_abort_training(tmp_path, command):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 2}}))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cnnkit", command, str(config), "--out", str(out)]
    if command == "sweep":
        argv += ["--grid", "train.lr=[0.01, 0.02]"]
    child = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.readline()  # `| head -1`: one line, then the reader is gone
    child.stdout.close()
    _, err = child.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    runs = [out] if command == "train" else [out / "lr=0.01", out / "lr=0.02"]
    for run in runs:
        manifest = json.loads((run / "run.json").read_text())
        assert manifest["status"] == "finished" and manifest["epoch"] == 2, manifest


def test_a_ctrl_c_just_after_run_json_leaves_a_run_that_resumes(cli, write_config, tmp_path,
                                                                 monkeypatch):
    """A real SIGINT to this process the moment run.json is written: once a folder with a
    manifest and no config.yaml, which `cnnkit resume` refused."""
    import signal

    import cnnkit.training.run as run_module

    start = run_module.RunDirectory.start.__func__

    def start_then_ctrl_c(cls, *args, **kwargs):
        rundir = start(cls, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return rundir

    monkeypatch.setattr(run_module.RunDirectory, "start", classmethod(start_then_ctrl_c))
    path, run = write_config(), tmp_path / "run"
    code, _, err = cli("train", path, "--out", run, "--quiet", "--set", "train.epochs=1")
    assert code == 130, err
    assert (run / "config.yaml").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    code, _, err = cli("resume", run, "--quiet")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


SHUTDOWN = """
import atexit, os, signal, sys, time
sys.argv = ["cnnkit", "configs"]
from cnnkit.cli import main
def late():  # a Ctrl-C while the interpreter shuts down, after the command is done
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
atexit.register(late)
raise SystemExit(main())
"""


def test_a_ctrl_c_during_shutdown_keeps_the_commands_exit_status():
    done = subprocess.run([sys.executable, "-c", SHUTDOWN], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "mnist_conv" in done.stdout
    assert "KeyboardInterrupt" not in done.stderr and "Traceback" not in done.stderr, \
        done.stderr
