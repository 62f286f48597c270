"""Logs a person can read in a file (header, progress lines, epoch line, train.log), the
divergence stop, gradient accumulation, and the out-of-memory message."""

from __future__ import annotations

import copy
import re
import time

import pytest
import torch

import cnnkit.training.loop
from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import load_config
from cnnkit.rundir.lock import read_manifest
from cnnkit.runtime.assemble import assemble
from cnnkit.training.callbacks import Callback
from cnnkit.training.loop import Stepper, train_one_epoch
from cnnkit.training.trainer import train
from tests.conftest import SMALL_CONV

QUICK = {**SMALL_CONV, "data": {"name": "mnist-sample", "train_size": 150, "val_size": 50},
         "train": {"batch_size": 50, "epochs": 1, "device": "cpu", "log_every": 1}}


class Slow(Callback):
    def on_step_end(self, run, step) -> None:
        time.sleep(0.12)


def test_header_progress_lines_epoch_line_and_train_log(write_config, tmp_path, capsys):
    """Not a terminal (captured): a progress line on stderr every log_every_seconds, while
    the epoch runs; stdout and stderr both land in train.log."""
    path = write_config(QUICK)
    train(path, out_dir=tmp_path / "run", callbacks=[Slow()],
          overrides=("train.log_every_seconds=0.1",))
    out, err = capsys.readouterr()
    header = out.splitlines()[:5]
    assert re.match(r"cnnkit \S+, torch \S+: starting .*small\.yaml$", header[0])
    assert header[1].startswith("device cpu, precision fp32, channels_last ")
    assert header[2] == "parameters 5,386 (5,386 trainable)"
    assert header[3] == ("data mnist-sample: 150 train, 50 val; batch 50, 3 steps per epoch, "
                         "1 epoch")
    assert header[4] == f"run directory {tmp_path / 'run'}"
    progress = [line for line in err.splitlines() if line.startswith("epoch 1  step ")]
    assert len(progress) >= 2, err  # 3 steps of >= 120 ms each, a line per 100 ms
    assert re.fullmatch(r"epoch 1  step \d/3  loss \d+\.\d{4}  [\d,]+ img/s  ETA \d:\d\d:\d\d",
                        progress[0])
    epoch = next(line for line in out.splitlines() if line.startswith("epoch   1/1"))
    assert re.fullmatch(r"epoch   1/1  train loss \d\.\d{4}  val loss \d\.\d{4} acc \d\.\d{4}  "
                        r"\d+\.\d\ds  wait \d+%  lr 0\.005(  [\d,]+ img/s)?  \* best", epoch)
    assert len(epoch) <= 100  # the data-wait figure included
    assert out.splitlines()[-1].startswith("best.pt holds epoch 1: val_acc 0.")
    log = (tmp_path / "run" / "train.log").read_text()
    for line in [*out.splitlines(), *progress]:
        if line != epoch:
            assert f"  {line}\n" in log
    # train.log's epoch line holds every metric (balanced on balanced digits: the console's
    # leaves balanced_acc and macro_f1 out)
    full = re.search(r"epoch   1/1  train loss .*", log).group(0)
    for metric in ("train loss", " acc ", "balanced_acc", "macro_f1", "val loss"):
        assert metric in full and (metric in epoch) == (metric in ("train loss", " acc ",
                                                                   "val loss"))


def test_divergence_stops_names_the_checkpoint_and_resumes_at_a_lower_rate(
        cli, write_config, tmp_path):
    """SGD at a rate of 50 grows the loss without reaching inf: the factor watch stops it
    with last.pt untouched (finite, from epoch 1), and the run resumes at a sane rate."""
    sgd = {**QUICK, "train": {**QUICK["train"], "optimizer": "sgd", "lr": 0.01,
                              "momentum": 0.0, "epochs": 2}}
    path, run = write_config(sgd), tmp_path / "run"
    assert cli("train", path, "--out", run, "--quiet", "--set", "train.epochs=1")[0] == 0
    good = (run / "last.pt").read_bytes()
    code, _, err = cli("resume", run, "--set", "train.lr=50", "--set", "train.epochs=2")
    assert code == 2 and err.count("\n") == 1
    assert "train loss diverged at epoch 2, step " in err and "train.diverge_factor" in err
    assert f"{run / 'last.pt'} (from the end of epoch 1) is unchanged; resume from it with a " \
        f"lower rate: cnnkit resume {run} --set train.lr=5" in err
    assert (run / "last.pt").read_bytes() == good
    assert read_manifest(run)["status"] == "failed"
    assert err.strip().removeprefix("cnnkit: error: ") in (run / "train.log").read_text()
    code, _, err = cli("resume", run, "--set", "train.lr=0.01", "--set", "train.epochs=2",
                       "--quiet")
    assert code == 0, err
    saved = load_checkpoint(run / "last.pt", for_resume=True)
    assert saved["epoch"] == 2 and saved["optimizer"]["param_groups"][0]["lr"] == 0.01


def test_accumulation_gives_the_update_of_the_whole_batch(write_config):
    """An epoch of 50-example batches, each as 3 micro-batches (17 + 16 + 17): the same
    weights and epoch loss as whole batches, float rounding aside."""
    cpu = torch.device("cpu")
    model, data, task = assemble(load_config(write_config(QUICK)), cpu)
    initial = copy.deepcopy(model.state_dict())
    results = []
    for parts, net in ((1, model), (3, copy.deepcopy(model))):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0)
        loader = data.loader("train", batch_size=50, shuffle=True, seed=0, device=cpu)
        metrics, _ = train_one_epoch(Stepper(net, optimizer, scheduler, task, accumulate=parts),
                                     loader, epoch=0)
        results.append((net.state_dict(), metrics))
    (whole, whole_metrics), (split, split_metrics) = results
    for name, value in whole.items():
        torch.testing.assert_close(split[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(whole["0.weight"], initial["0.weight"])  # it did learn
    assert split_metrics["loss"] == pytest.approx(whole_metrics["loss"], rel=1e-5)
    assert split_metrics["acc"] == whole_metrics["acc"]


def test_out_of_memory_is_one_line_naming_the_batch(cli, write_config, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cnnkit.training.loop, "_step", no_memory)
    code, _, err = cli("train", write_config(QUICK), "--out", tmp_path / "run", "--quiet",
                       "--set", "train.accumulate_steps=2")
    assert code == 2 and err.count("\n") == 1
    assert ("ran out of memory with 25 examples per forward pass (train.batch_size 50, "
            "train.accumulate_steps 2); set train.accumulate_steps to 4 or more") in err


def test_data_wait_on_the_epoch_line_and_one_hint_after_two_slow_epochs(monkeypatch):
    from cnnkit.training import fit
    from cnnkit.training.log import data_wait_hint, epoch_line

    row = {"epoch": 3, "train_loss": 0.5, "train_acc": 0.9, "seconds": 2.0, "data_wait": 0.123,
           "lr": 0.1}
    assert epoch_line(row, 10) == ("epoch   3/10  train loss 0.5000 acc 0.9000  2.00s  wait 12%"
                                   "  lr 0.1")
    monkeypatch.setattr(fit, "available_cpus", lambda: 2)
    rows = [{"data_wait": w} for w in (0.1, 0.4, 0.5, 0.6)]
    assert data_wait_hint(rows[:2], 4) is None
    assert data_wait_hint(rows[:3], 4) == (
        "hint: the last 2 epochs waited 40% and 50% of their time for the next batch; "
        "data.workers is 4, this machine has 2 CPUs: more data.workers (up to 2), a smaller "
        "data.image_size or fewer augmentations keep the steps fed")
    assert data_wait_hint(rows, 4) is None  # said once
    assert data_wait_hint([{"data_wait": 0.4}, {"data_wait": 0.2}, {"data_wait": 0.5}],
                          None) is None
    assert data_wait_hint([{}, {"data_wait": 0.9}], None) is None  # a row from older cnnkit


def test_the_loop_times_the_wait_for_each_batch():
    import time

    from cnnkit.training.loop import _timed

    def slow():
        for i in range(3):
            time.sleep(0.05)
            yield i

    waits = []
    assert list(_timed(slow(), waits)) == [0, 1, 2]
    assert len(waits) == 3 and all(0.04 < w < 1.0 for w in waits)
