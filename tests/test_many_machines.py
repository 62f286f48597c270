"""Two nodes simulated on one machine: two real torchrun launchers (c10d rendezvous on
loopback, one process each) must end with the weights one process reaches at the same global
batch, rank 0 alone writing the run directory; a node that stops answering stops the other
within train.dist_timeout, with one cnnkit line naming the cause."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnkit.training.trainer import train
from tests.conftest import ROOT

TINY = """model:
  input: [1, 28, 28]
  layers: [[Conv2d, 1, 4, 5], [ReLU], [MaxPool2d, 4], [Flatten], [Linear, 10]]
data: {name: mnist-sample, train_size: 300, val_size: 100}
train: {optimizer: adam, lr: 0.005, batch_size: 100, epochs: 2, dist_timeout: 10}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(port: int, run_id: str, config: Path, out: Path, log: Path, *extra: str):
    """One node: `torchrun --nnodes 2 --nproc-per-node 1` with c10d rendezvous on loopback,
    in a session of its own (its worker too), output to `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
            "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id",
            run_id, "--local-addr", "127.0.0.1", "--max-restarts", "0", "-m", "cnnkit", "train",
            str(config), "--out", str(out), *extra]
    with open(log, "w") as f:
        return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _two_nodes(tmp_path: Path, out: Path, *extra: str):
    """Node 1 first, so that it hosts the rendezvous store; then node 2."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    port = _free_port()
    first = _launch(port, tmp_path.name, config, out, tmp_path / "node1.log", *extra)
    deadline = time.monotonic() + 60
    while not _listening(port) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    second = _launch(port, tmp_path.name, config, out, tmp_path / "node2.log", *extra)
    return config, first, second


def _tree(pid: int) -> list[int]:
    """pid and its descendants (torchrun's agent starts the worker in a session of its own,
    so a process group does not reach it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _signal_tree(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _end(*launchers: subprocess.Popen) -> None:
    for launcher in launchers:
        if launcher.poll() is None:
            _signal_tree(_tree(launcher.pid), signal.SIGKILL)
            launcher.wait()


@pytest.mark.slow
def test_two_nodes_end_where_one_process_ends(tmp_path):
    out = tmp_path / "run"
    config, first, second = _two_nodes(tmp_path, out)
    try:
        torch.set_num_threads(1)
        single = train(config, out_dir=tmp_path / "one", quiet=True)  # meanwhile, one process
        assert first.wait(timeout=240) == 0, (tmp_path / "node1.log").read_text()[-3000:]
        assert second.wait(timeout=60) == 0, (tmp_path / "node2.log").read_text()[-3000:]
    finally:
        _end(first, second)
    both = torch.load(out / "last.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(both["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert [r["val_loss"] for r in both["history"]] == pytest.approx(
        [r["val_loss"] for r in single.history], rel=1e-4)
    logs = [(tmp_path / f"node{i}.log").read_text() for i in (1, 2)]
    # rank 0 alone prints, locks the directory and keeps its log: one header, one epoch line
    assert sum(log.count("epoch   2/2") for log in logs) == 1
    assert (out / "train.log").read_text().count("run directory ") == 1
    assert "2 processes" in (out / "train.log").read_text()


@pytest.mark.slow
def test_a_node_that_stops_answering_stops_the_other_within_dist_timeout(tmp_path):
    out = tmp_path / "run"
    _, first, second = _two_nodes(tmp_path, out, "--set", "train.epochs=100000")
    try:
        deadline = time.monotonic() + 180
        while not (out / "metrics.csv").exists():  # both are training
            assert first.poll() is None and second.poll() is None, \
                (tmp_path / "node1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the two nodes did not start training"
            time.sleep(0.2)
        # a machine that loses power sends nothing: its peer hears silence, not a reset
        frozen = _tree(second.pid)
        _signal_tree(frozen, signal.SIGSTOP)
        stopped_at = time.monotonic()
        code = first.wait(timeout=120)
        waited = time.monotonic() - stopped_at
    finally:
        _signal_tree(_tree(second.pid), signal.SIGKILL)
        _signal_tree(_tree(second.pid), signal.SIGCONT)
        _end(first, second)
    log = (tmp_path / "node1.log").read_text()
    assert code != 0
    assert waited < 10 + 30, f"the surviving node took {waited:.0f} s (train.dist_timeout 10)"
    ours = [line for line in log.splitlines() if "cnnkit: error:" in line]
    assert len(ours) == 1, log[-3000:]
    assert "lost the other processes of this torchrun job" in ours[0]
    assert "train.dist_timeout" in ours[0]
    assert f"{ROOT}/cnnkit/" not in log  # no traceback through cnnkit: one line
