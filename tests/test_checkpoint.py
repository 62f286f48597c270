"""Checkpoints cannot lie: a digest over every byte, every known key's structure checked, and
whatever is wrong with a file is one CheckpointError line, exit 2, in every command."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil

import pytest
import torch
from PIL import Image

from cnnkit.checkpoint import FORMAT, MAGIC, TRAILER, load_checkpoint, save_checkpoint
from cnnkit.data.mnist_sample import read_sample
from cnnkit.errors import CheckpointError


@pytest.fixture(scope="module")
def last(trained_run) -> bytes:
    """The bytes of a real last.pt (SMALL_CONV, 2 epochs, Adam)."""
    return (trained_run[1].out_dir / "last.pt").read_bytes()


def test_every_checkpoint_records_what_it_needs(trained_run):
    state = load_checkpoint(trained_run[1].out_dir / "best.pt")
    assert state["format"] == FORMAT and state["task"] == "classification"
    assert state["cnnkit_version"] and state["torch_version"] == torch.__version__.split("+")[0]
    assert state["preprocessing"] == {"channels": 1, "height": 28, "width": 28,
                                      "mean": [0.1307], "std": [0.3081], "resize": None,
                                      "interpolation": "bilinear"}
    assert state["config"]["data"]["mean"] == [0.1307]  # resolved, never null
    config_yaml = (trained_run[1].out_dir / "config.yaml").read_text()
    assert "mean: [0.1307]" in config_yaml and "std: [0.3081]" in config_yaml


def test_the_trailer_is_a_digest_of_every_byte_before_it(last):
    body, trailer = last[:-TRAILER], last[-TRAILER:]
    assert trailer == MAGIC + hashlib.sha256(body).digest()


def test_fifty_random_bit_flips_are_each_refused_with_one_line(last, tmp_path):
    """A flip anywhere (zip headers, padding, pickle, tensors, the trailer) is refused."""
    path = tmp_path / "last.pt"
    for seed in range(50):
        rng = random.Random(seed)
        data = bytearray(last)
        at = rng.randrange(len(data)) if seed % 5 else len(data) - rng.randrange(1, TRAILER + 1)
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, (seed, at)
        assert "not a cnnkit checkpoint" not in message, (seed, at)  # damaged, not foreign


@pytest.mark.parametrize("where", ["marker", "digest", "dropped"])
def test_a_damaged_trailer_is_damaged_not_a_foreign_file(last, tmp_path, where):
    data = bytearray(last)
    if where == "dropped":
        data = data[:-TRAILER]
    else:
        data[-TRAILER + (3 if where == "marker" else 20)] ^= 0x10
    path = tmp_path / "last.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_a_checkpoint_from_before_the_digest_loads_with_a_warning(trained_run, tmp_path, cli):
    state = load_checkpoint(trained_run[1].out_dir / "best.pt")
    for key in ("format", "torch_version", "preprocessing", "task"):  # as format 1 wrote it
        del state[key]
    state["config"]["data"]["mean"] = state["config"]["data"]["std"] = None
    state.update(mean=[0.1307], std=[0.3081])
    torch.save(state, tmp_path / "old.pt")
    code, out, err = cli("eval", tmp_path / "old.pt", "--json")
    assert code == 0 and err.count("\n") == 1 and "written before checkpoints carried a " \
        "digest" in err
    scored = state["history"][state["best_epoch"] - 1]["val_acc"]  # what best.pt scored
    assert json.loads(out)["accuracy"] == pytest.approx(scored, abs=1e-6)


def _fiddle(state: dict, form: str) -> object:
    """`state` (a real last.pt, loaded) made malformed as `form` says."""
    model = state["model"]
    first = next(iter(model))
    forms = {
        "not-a-dict": lambda: [1, 2, 3],
        "model-is-int": lambda: state.update(model=5),
        "config-is-str": lambda: state.update(config="model: {}"),
        "config-bad-value": lambda: state["config"]["model"].update(input="wide"),
        "weights-wrong-shape": lambda: model.update({first: torch.zeros(3)}),
        "weights-missing-key": lambda: model.pop(first),
        "weights-extra-key": lambda: model.update({"extra.weight": torch.zeros(2)}),
        "weights-non-tensor": lambda: model.update({first: 1.5}),
        "weights-dtype": lambda: model.update({first: model[first].long()}),
        "classes-count": lambda: state.update(classes=["a", "b"]),
        "preprocessing-shape": lambda: state["preprocessing"].update(channels=3,
                                                                     mean=[0.5] * 3,
                                                                     std=[0.5] * 3),
        "task-unknown": lambda: state.update(task=7),
        "epoch-negative": lambda: state.update(epoch=-1),
        "step-without-totals": lambda: state.update(step=3),
        "epoch-not-history": lambda: state.update(epoch=5),
        "history-row": lambda: state.update(history=[{"epoch": "one"}, {"epoch": 2}]),
        "optimizer-not-state": lambda: state.update(optimizer={"state": [], "param_groups": 1}),
        "optimizer-wrong-shape": lambda: state["optimizer"]["state"][0].update(
            exp_avg=torch.zeros(1, 2)),
        "scheduler-keys": lambda: state.update(scheduler={"last_epoch": "x"}),
        "rng-missing": lambda: state.update(rng={}),
        "rng-torch-length": lambda: state["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
        "ema-bad": lambda: state.update(ema={"decay": 0.9}),
        "format-newer": lambda: None,  # written with format 99 below
    }
    result = forms[form]()
    return result if form == "not-a-dict" else state


FORMS = ["not-a-dict", "model-is-int", "config-is-str", "config-bad-value",
         "weights-wrong-shape", "weights-missing-key", "weights-extra-key", "weights-non-tensor",
         "weights-dtype",
         "classes-count", "preprocessing-shape", "task-unknown", "epoch-negative",
         "step-without-totals",
         "epoch-not-history", "history-row", "optimizer-not-state", "optimizer-wrong-shape",
         "scheduler-keys", "rng-missing", "rng-torch-length", "ema-bad", "format-newer"]
# what only training from the file uses: the other commands may load such a file as it is
RESUME_ONLY = {"optimizer-wrong-shape", "scheduler-keys", "rng-torch-length"}
# what only inference reads: a resumed run writes both anew from its config and data
INFERENCE_ONLY = {"classes-count", "preprocessing-shape"}
# what model.weights does not read: a weight file's other keys are checked for structure only
# (an integer weight is refused, as eval refuses it: tests/test_ring2_checkpoint.py)
WEIGHTS_FINE = RESUME_ONLY | {"classes-count", "preprocessing-shape", "config-bad-value",
                              "weights-missing-key", "weights-extra-key"}


def _write(path, state, *, form: str) -> None:
    """As save_checkpoint writes, with what it would not write: format 99, or a list."""
    if isinstance(state, dict) and form != "format-newer":
        save_checkpoint(path, state)
        return
    buffer = io.BytesIO()
    torch.save({**state, "format": 99} if isinstance(state, dict) else state, buffer)
    path.write_bytes(buffer.getvalue() + MAGIC + hashlib.sha256(buffer.getvalue()).digest())


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(read_sample()[0][0, 0].numpy(), mode="L").save(path)
    return path


@pytest.mark.parametrize("form", FORMS)
def test_malformed_checkpoints_are_one_line_in_every_command(trained_run, tmp_path, cli, form,
                                                             digit_png):
    config, result = trained_run
    run = tmp_path / "run"
    shutil.copytree(result.out_dir, run)
    state = load_checkpoint(run / "last.pt")
    _write(run / "last.pt", _fiddle(state, form), form=form)
    commands = {
        "eval": ["eval", run / "last.pt"],
        "predict": ["predict", run / "last.pt", digit_png],
        "visualize": ["visualize", run / "last.pt", "filters", "--out", tmp_path / "f.png"],
        "resume": ["train", config, "--out", run, "--resume", "--quiet"],
        "weights": ["train", config, "--out", tmp_path / "new", "--quiet", "--set",
                    f"model.weights={run / 'last.pt'}", "--set", "train.epochs=0"],
    }
    if form in RESUME_ONLY:  # the other commands would just run: not worth their seconds
        commands = {k: v for k, v in commands.items() if k in ("resume", "weights")}
    for name, args in commands.items():
        code, _, err = cli(*args)
        assert "Traceback" not in err and err.count("\n") <= 1, (name, err)
        fine = (name != "resume" and form in RESUME_ONLY) or (
            name == "resume" and form in INFERENCE_ONLY) or (name == "weights"
                                                             and form in WEIGHTS_FINE)
        if not fine:
            assert code == 2 and err.startswith("cnnkit: error: "), (name, code, err)
