"""Reliability in-process: mid-epoch resume, divergence, clipping, data checks before the
first step, and safe loading of checkpoints and configs."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

import cnnkit.training.trainer
from cnnkit.atomic import _host, remove_stale_temps, temp_name
from cnnkit.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.config import load_config
from cnnkit.data import DATASETS, DIGITS, Data
from cnnkit.data.tensors import Split
from cnnkit.errors import CheckpointError, ConfigError, DataError, DivergenceError, TrainingStopped
from cnnkit.tasks import Classification
from cnnkit.training.callbacks import Callback
from cnnkit.training.guards import FiniteWatch, clip_gradients
from cnnkit.training.trainer import train
from tests.conftest import ROOT, SMALL_CONV

TINY = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "layers": [
    *SMALL_CONV["model"]["layers"][:-1], ["Dropout", 0.3], ["Linear", 10]]},
    "data": {"name": "mnist-sample", "train_size": 300, "val_size": 100},
    "train": {"batch_size": 50, "epochs": 2, "device": "cpu", "lr": 0.01}}


class SignalAfter(Callback):
    """Sends `signum` to this process after optimizer step `step` of the run (1-based): the
    loop sees it at the next step's end."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum, self.count = step, signum, 0

    def on_step_end(self, run, step) -> None:
        self.count += 1
        if self.count == self.step:
            os.kill(os.getpid(), self.signum)


def test_stop_mid_epoch_then_resume_equals_a_straight_run(write_config, tmp_path):
    """Stopped inside epoch 2, resumed from that step: same weights and the same epoch-2
    train loss, which needs the partial metric sums of the first 2 batches from the checkpoint."""
    path = write_config(TINY)
    straight = train(path, out_dir=tmp_path / "a", quiet=True)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at epoch 2, step 2") as info:
        # epochs of 6 steps: the signal after step 7 (epoch 2, step 1) is seen at step 2
        train(path, out_dir=tmp_path / "b", quiet=True, callbacks=[SignalAfter(7)])
    assert info.value.signum == signal.SIGTERM
    saved = load_checkpoint(tmp_path / "b" / "last.pt", for_resume=True)
    assert (saved["epoch"], saved["step"]) == (1, 2) and saved["totals"][2] == 100
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    resumed = train(path, out_dir=tmp_path / "b", quiet=True, resume=True)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


class LastSaves(Callback):
    """(epoch, step) of last.pt each time it has changed, looked at after every step and
    epoch (after the trainer's own callbacks, which save)."""

    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def look(self, run) -> None:
        if (run.out / "last.pt").exists():
            saved = load_checkpoint(run.out / "last.pt")
            if not self.seen or self.seen[-1] != (saved["epoch"], saved["step"]):
                self.seen.append((saved["epoch"], saved["step"]))

    def on_step_end(self, run, step) -> None:
        self.look(run)

    def on_epoch_end(self, run, row) -> None:
        self.look(run)


def test_checkpoint_every_steps_saves_mid_epoch(write_config, tmp_path):
    saves = LastSaves()
    train(write_config(TINY), out_dir=tmp_path / "run", quiet=True,
          overrides=("train.checkpoint_every_steps=4",), callbacks=[saves])
    # global steps 4, 8 (= epoch 2, step 2), 12 is the end of epoch 2: the epoch's own save
    assert saves.seen == [(0, 4), (1, 0), (1, 2), (2, 0)]


def test_an_improving_epoch_serializes_once_for_best_and_last(write_config, tmp_path,
                                                              monkeypatch):
    calls, real = [], torch.save
    monkeypatch.setattr(torch, "save", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(write_config(TINY), out_dir=tmp_path / "run", quiet=True,
          overrides=("train.epochs=1",))
    assert len(calls) == 1  # the first epoch always improves: best.pt and last.pt
    assert (tmp_path / "run" / "best.pt").read_bytes() == \
        (tmp_path / "run" / "last.pt").read_bytes()


def nan_loss_at(monkeypatch, call: int, value: float = float("nan")) -> None:
    loss, count = Classification.loss, [0]

    def poisoned(self, output, target):
        count[0] += 1
        result = loss(self, output, target)
        return result * value if count[0] == call else result

    monkeypatch.setattr(Classification, "loss", poisoned)


def test_nan_loss_stops_at_its_step_and_keeps_the_good_checkpoint(write_config, tmp_path,
                                                                  monkeypatch):
    path = write_config(TINY)
    train(path, out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    good = (tmp_path / "run" / "last.pt").read_bytes()
    nan_loss_at(monkeypatch, 3)  # epoch 2, step 3
    with pytest.raises(DivergenceError, match=r"became nan at epoch 2, step 3: stopped"):
        train(path, out_dir=tmp_path / "run", quiet=True, resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


def test_inf_loss_with_mid_epoch_saves_never_saves_bad_weights(write_config, tmp_path,
                                                               monkeypatch):
    nan_loss_at(monkeypatch, 5, float("inf"))
    with pytest.raises(DivergenceError, match=r"became inf at epoch 1, step 5"):
        train(write_config(TINY), out_dir=tmp_path / "run", quiet=True,
              overrides=("train.checkpoint_every_steps=2",))
    saved = load_checkpoint(tmp_path / "run" / "last.pt", for_resume=True)
    assert (saved["epoch"], saved["step"]) == (0, 4)
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_cli_divergence_is_one_line_exit_2(cli, write_config, tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, 1)
    code, _, err = cli("train", write_config(TINY), "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert "train loss became nan at epoch 1, step 1" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_watch_names_the_first_bad_step_when_it_checks_late():
    watch = FiniteWatch(torch.device("cpu"), epoch=0, check_every=5)
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan")]):
        watch.observe(torch.tensor(value), step)  # not due yet: no error
    with pytest.raises(DivergenceError, match="became inf at epoch 1, step 3"):
        watch.observe(torch.tensor(0.5), 4)


def test_grad_clip_bounds_the_global_norm():
    model = torch.nn.Linear(20, 5)
    model(torch.randn(8, 20) * 100).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) > 1
    clip_gradients(model.parameters(), 0.5)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)
    before = [p.grad.clone() for p in model.parameters()]
    clip_gradients(model.parameters(), None)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))


def test_grad_clip_in_training_changes_the_run(write_config, tmp_path):
    path = write_config(TINY)
    free = train(path, out_dir=tmp_path / "a", quiet=True, overrides=("train.epochs=1",))
    clipped = train(path, out_dir=tmp_path / "b", quiet=True,
                    overrides=("train.epochs=1", "train.grad_clip=0.01"))
    assert free.history[0]["train_loss"] != clipped.history[0]["train_loss"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train.grad_clip", "-1", "train.grad_clip: expected a positive max norm or null, found"),
    ("train.grad_clip", ".nan", "train.grad_clip: expected a positive max norm"),
    ("train.checkpoint_every_steps", "0", "train.checkpoint_every_steps: expected a positive"),
    ("train.batch_size", "0", "train.batch_size: expected a positive integer, found 0"),
    ("train.lr", ".inf", "train.lr: expected a finite number, found inf"),
])
def test_bad_reliability_options_fail_before_anything_runs(write_config, tmp_path, key, value,
                                                           message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(write_config(TINY), out_dir=tmp_path / "run", quiet=True,
              overrides=(f"{key}={value}",))
    assert not (tmp_path / "run").exists()


# -- data checked before the first step ---------------------------------------------------

def _images(n: int, channels: int = 1) -> torch.Tensor:
    return torch.zeros(n, channels, 28, 28, dtype=torch.uint8)


BAD_DATA = {
    "label-range": ({"train": Split(_images(4), torch.tensor([0, 3, 10, 1])),
                     "val": Split(_images(2), torch.tensor([0, 1]))},
                    "split 'train': label 10 at index 2 is outside the 10 classes (0..9)"),
    "negative-label": ({"train": Split(_images(2), torch.tensor([0, 1])),
                        "val": Split(_images(2), torch.tensor([-1, 1]))},
                       "split 'val': label -1 at index 0 is outside the 10 classes (0..9)"),
    "counts": ({"train": Split(_images(5), torch.tensor([0, 1, 2])),
                "val": Split(_images(2), torch.tensor([0, 1]))},
               "split 'train': 5 images but 3 labels"),
    "empty": ({"train": Split(_images(2), torch.tensor([0, 1])),
               "val": Split(_images(0), torch.zeros(0, dtype=torch.int64))},
              "split 'val': is empty (0 examples)"),
    "float-labels": ({"train": Split(_images(2), torch.tensor([0.0, 1.0])),
                      "val": Split(_images(2), torch.tensor([0, 1]))},
                     "split 'train': labels must be one integer class index per example, "
                     "found torch.float32 of shape (2,)"),
    "shapes": ({"train": Split(_images(2), torch.tensor([0, 1])),
                "val": Split(_images(2, 3), torch.tensor([0, 1]))},
               "split 'val': images are 3×28×28, the training split's are 1×28×28"),
}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_error_before_the_first_step_on_every_device(
        write_config, tmp_path, monkeypatch, case):
    splits, message = BAD_DATA[case]
    monkeypatch.setitem(DATASETS, "broken", lambda cfg: Data(splits, DIGITS, (0.5,), (0.5,)))
    monkeypatch.setattr(cnnkit.training.trainer, "build_optimizer", pytest.fail)  # never reached
    errors = set()
    for device in DEVICES:
        config = {**TINY, "data": {"name": "broken"}, "train": {**TINY["train"],
                                                                 "device": device}}
        with pytest.raises(DataError) as info:
            train(write_config(config), out_dir=tmp_path / device, quiet=True)
        errors.add(str(info.value))
    assert len(errors) == 1
    assert errors.pop() == f"{tmp_path / 'small.yaml'}: data (broken): {message}"


def test_input_channels_must_match_the_first_layer(write_config, tmp_path):
    layers = [["Conv2d", 8, 5], *TINY["model"]["layers"][1:]]  # in_channels inferred: 3
    config = {**TINY, "model": {"input": [3, 28, 28], "layers": layers}}
    with pytest.raises(ConfigError, match="model.input: the model's first layer takes 3 input "
                                          "channels, but mnist-sample's images have 1"):
        train(write_config(config), out_dir=tmp_path / "run", quiet=True)
    layers = [["Conv2d", 3, 8, 5], *TINY["model"]["layers"][1:]]
    config = {**TINY, "model": {**TINY["model"], "layers": layers}}
    with pytest.raises(ConfigError, match=r"model.layers.0 \(Conv2d\): in_channels is 3, but "
                                          r"the incoming tensor is 1×28×28"):
        train(write_config(config), out_dir=tmp_path / "run", quiet=True)


# -- safe loading -------------------------------------------------------------------------

class Gadget:
    """Pickles as a call of os.system: what an unsafe torch.load would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_gadget_checkpoint_is_refused_and_never_runs(cli, write_config, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "run" / "last.pt"
    bad.parent.mkdir()
    torch.save({"model": {}, "payload": Gadget(marker)}, bad)
    with pytest.raises(CheckpointError, match=r"last.pt: refused: it needs the global "
                                              r"posix.system"):
        load_checkpoint(bad)
    code, _, err = cli("eval", bad)
    assert code == 2 and "refused: it needs the global posix.system" in err
    code, _, err = cli("train", write_config(TINY), "--out", bad.parent, "--resume")
    assert code == 2 and "refused: it needs the global posix.system" in err
    assert not marker.exists()


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ck") / "good.pt"
    model = torch.nn.Linear(3, 2)
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1})
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["empty", "random", "text", "truncated-1", "truncated-half",
                                    "truncated-most", "flipped"])
def test_damaged_checkpoint_is_one_checkpoint_error(tmp_path, good_checkpoint, damage):
    data = {
        "empty": b"",
        "random": bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                      dtype=torch.uint8).tolist()),
        "text": b"model: not a checkpoint\n",
        "truncated-1": good_checkpoint[:1],
        "truncated-half": good_checkpoint[: len(good_checkpoint) // 2],
        "truncated-most": good_checkpoint[:-30],
        "flipped": good_checkpoint[:40] + bytes(b ^ 0xFF for b in good_checkpoint[40:200])
        + good_checkpoint[200:],
    }[damage]
    path = tmp_path / "damaged.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_checkpoint_without_resume_state_is_refused_for_resume_only(cli, write_config, tmp_path):
    train(write_config(TINY), out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    full = load_checkpoint(tmp_path / "run" / "last.pt")
    save_checkpoint(tmp_path / "run" / "last.pt",
                    {"model": full["model"], "config": full["config"]})
    code, _, err = cli("train", write_config(TINY), "--out", tmp_path / "run", "--resume")
    assert code == 2 and "cannot resume from it, it lacks optimizer, scheduler, epoch" in err
    code, out, err = cli("eval", tmp_path / "run" / "last.pt")
    assert code == 0 and "accuracy" in out, err


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="evil.yaml: not valid YAML: .*python/object/apply"):
        load_config(path)
    with pytest.raises(ConfigError, match="--set .*not valid YAML"):
        load_config(ROOT / "configs" / "mnist_conv.yaml",
                    [f"train.lr=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def test_no_unsafe_loader_anywhere_in_the_package():
    """Every torch.load passes weights_only=True; no yaml.load/unsafe_load/pickle.load. A new
    loader elsewhere in cnnkit fails here the day it is added."""
    for path in (ROOT / "cnnkit").rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
        for unsafe in ("yaml.load(", "yaml.unsafe_load", "yaml.full_load", "pickle.load",
                       "yaml.Loader", "UnsafeLoader"):
            assert unsafe not in text, f"{path}: {unsafe}"


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    """Only ours: our naming, a dead PID, this host. A user's `.draft.99999.tmp` (once
    deleted) and another host's temporary stay."""
    dead = tmp_path / f".last.pt.999999999@{_host()}.cnnkit.tmp"  # no such pid
    alive = temp_name(tmp_path / "last.pt")
    keep = tmp_path / "last.pt"
    users = tmp_path / ".draft.99999.tmp"
    elsewhere = tmp_path / ".last.pt.999999999@another-host.cnnkit.tmp"
    for path in (dead, alive, keep, users, elsewhere):
        path.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert not dead.exists() and all(p.exists() for p in (alive, keep, users, elsewhere))


LAYERS = "model: {input: [1, 28, 28], layers: [[Flatten], [Linear, 10]]}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("model: " + "[" * 5000 + "]" * 5000, "not valid YAML: line 1: nested more than 100 levels"),
    (LAYERS + "train:\n  lr: 0.1\n  seed: 1\n  lr: 0.2\n",
     "duplicate key 'lr' at lines 3 and 5"),
    (LAYERS + "train: {seed: 100000000000000000000}\n",
     "train.seed: expected an integer that fits in 64 bits"),
    (LAYERS + "train: {lr: 1.0e39}\n", "train.lr: expected a number of size at most 3.4e38"),
    (LAYERS + "train: {lr: 5000}\n",
     "train.lr: expected a learning rate of at most 1000, found 5000"),
    ("model: {input: [1, 28, 28], layers: [[Repeat, 100000000000, [ReLU]]]}\n",
     "model.layers.0.1: expected a repeat count from 1 to 10,000, found 100000000000"),
    ("model: {input: [1, 28, 1000000], layers: [[Flatten]]}\n",
     "model.input: expected sizes (C, H, W) of at most 65536, found [1, 28, 1000000]"),
    (LAYERS + "#" * 1_000_001, "bytes; a config is at most 1,000,000 bytes"),
])
def test_configs_that_cannot_hurt(cli, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = cli("summary", path)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_config_that_is_not_a_regular_file(cli):
    code, _, err = cli("summary", "/dev/zero")
    assert code == 2 and "/dev/zero: not a regular file" in err
