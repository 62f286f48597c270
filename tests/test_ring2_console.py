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
