import re

import pytest
import torch

from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import load_config
from cnnkit.data.tensors import Split, TensorLoader
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.models.builder import build_model
from cnnkit.runtime.evaluate import evaluate
from cnnkit.tasks import Classification
from cnnkit.training.callbacks import Callback
from cnnkit.training.trainer import train
from tests.conftest import SMALL_CONV


def test_short_run_really_learns(write_config, tmp_path):
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=3",))
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert history[-1]["val_acc"] > 0.8  # chance is 0.1
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(
        history[0])
    for name in ("metrics.csv", "curves.png", "last.pt", "best.pt", "config.yaml"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 4


def test_checkpoint_holds_what_resume_needs(write_config, tmp_path):
    train(write_config(), out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt", for_resume=True)
    assert checkpoint["epoch"] == 1 and checkpoint["classes"] == [str(d) for d in range(10)]
    assert checkpoint["config"]["train"]["epochs"] == 1
    assert {"python", "numpy", "torch"} <= set(checkpoint["rng"])
    assert checkpoint["cnnkit_version"]


def test_resume_continues_to_the_same_weights(write_config, tmp_path):
    """2 epochs, stop, resume to 4 == 4 epochs straight, bit for bit on CPU (with dropout,
    so the RNG state must come back too)."""
    config = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "layers": [
        *SMALL_CONV["model"]["layers"][:-1], ["Dropout", 0.3], ["Linear", 10]]}}
    path = write_config(config)
    straight = train(path, out_dir=tmp_path / "a", quiet=True, overrides=("train.epochs=4",))
    train(path, out_dir=tmp_path / "b", quiet=True, overrides=("train.epochs=2",))
    resumed = train(path, out_dir=tmp_path / "b", quiet=True, resume=True,
                    overrides=("train.epochs=4",))
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]


def test_refuses_to_overwrite_a_run(write_config, tmp_path):
    train(write_config(), out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(CnnkitError, match="already holds a run; pass --resume"):
        train(write_config(), out_dir=tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_resume_refuses_a_different_run(write_config, tmp_path):
    train(write_config(), out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    with pytest.raises(ConfigError, match="differs from the run's at train.weight_decay"):
        train(write_config(), out_dir=tmp_path / "run", quiet=True, resume=True,
              overrides=("train.weight_decay=0.1",))


def test_model_and_data_must_agree(write_config, tmp_path):
    config = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "layers": [
        *SMALL_CONV["model"]["layers"][:-1], ["Linear", 7]]}}
    with pytest.raises(ConfigError, match="outputs 7 values per example, but the dataset has 10"):
        train(write_config(config), out_dir=tmp_path / "run", quiet=True)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_other_optimizers_train(write_config, tmp_path, optimizer):
    result = train(write_config(), out_dir=tmp_path / optimizer, quiet=True,
                   overrides=(f"train.optimizer={optimizer}", "train.epochs=1",
                              "train.nesterov=true", "train.lr=0.01"))
    assert result.history[0]["val_acc"] > 0.2


def test_resume_may_change_what_does_not_change_learning(write_config, tmp_path):
    train(write_config(), out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1",))
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True, resume=True,
                   overrides=("train.epochs=2", "train.log_every=5",
                              "train.checkpoint_every_steps=3"))
    assert [r["epoch"] for r in result.history] == [1, 2]


TINY = ("data.train_size=200", "data.val_size=100")  # two batches of 100 per epoch


class Recorder(Callback):
    """What the loop shows its callbacks, in the order it shows it."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_step_end(self, run, step) -> None:
        assert isinstance(step.totals, torch.Tensor) and run.state.epoch == step.epoch
        self.events.append(("step", step.epoch, step.done, step.steps))

    def on_epoch_end(self, run, row) -> None:
        assert run.state.history[-1] is row and run.state.epoch == row["epoch"]
        assert (run.out / "last.pt").exists()  # the trainer's Checkpoints came first
        self.events.append(("epoch", row["epoch"]))

    def on_fit_end(self, run) -> None:
        self.events.append(("fit_end",))


def test_callbacks_see_every_step_and_epoch(write_config, tmp_path):
    recorder = Recorder()
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=(*TINY, "train.epochs=2"), callbacks=[recorder])
    assert recorder.events == [("step", 0, 1, 2), ("step", 0, 2, 2), ("epoch", 1),
                               ("step", 1, 1, 2), ("step", 1, 2, 2), ("epoch", 2), ("fit_end",)]
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_fit_end_is_called_when_a_callback_fails(write_config, tmp_path):
    class Fails(Recorder):
        def on_step_end(self, run, step) -> None:
            raise RuntimeError("boom")

    recorder = Fails()
    with pytest.raises(RuntimeError, match="boom"):
        train(write_config(), out_dir=tmp_path / "run", quiet=True,
              overrides=(*TINY, "train.epochs=1"), callbacks=[recorder])
    assert recorder.events == [("fit_end",)]


def test_zero_epochs_names_no_files_it_did_not_write(write_config, tmp_path, capsys):
    result = train(write_config(), out_dir=tmp_path / "run", overrides=(*TINY, "train.epochs=0"))
    assert result.history == []
    out = capsys.readouterr().out
    assert f"nothing trained (train.epochs: 0): {tmp_path / 'run'}/ holds only config.yaml" in out
    assert "run saved" not in out
    assert not [n for n in ("metrics.csv", "curves.png", "last.pt", "best.pt")
                if (tmp_path / "run" / n).exists()]


def test_the_final_line_lists_the_files_written(write_config, tmp_path, capsys):
    train(write_config(), out_dir=tmp_path / "run", overrides=(*TINY, "train.epochs=1"))
    assert f"run saved in {tmp_path / 'run'}/ (metrics.csv, curves.png, last.pt, best.pt)" \
        in capsys.readouterr().out


def test_overrides_apply_to_a_config_object(write_config, tmp_path):
    path = write_config()
    cfg = load_config(path)
    result = train(cfg, out_dir=tmp_path / "run", quiet=True,
                   overrides=(*TINY, "train.epochs=1"))
    assert len(result.history) == 1
    assert load_config(tmp_path / "run" / "config.yaml").data.train_size == 200
    assert cfg.train.epochs == 2  # the caller's Config is left as it was
    assert build_model(cfg, overrides=("model.layers.7=[Linear, 7]",)).output_shape == (7,)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*train.bogus"):
        train(cfg, out_dir=tmp_path / "other", quiet=True, overrides=("train.bogus=1",))


def test_a_run_without_a_validation_split(write_config, tmp_path, capsys):
    result = train(write_config(), out_dir=tmp_path / "run",
                   overrides=("data.train_size=200", "data.val_size=0", "train.epochs=2",
                              "train.monitor=train_loss"))
    assert list(result.history[0]) == ["epoch", "train_loss", "train_acc", "train_balanced_acc",
                                       "train_macro_f1", "lr", "seconds", "data_wait"]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    run = tmp_path / "run"  # best.pt follows the train_loss monitor: here the last epoch
    assert load_checkpoint(run / "best.pt")["epoch"] == 2 == load_checkpoint(run / "last.pt")[
        "epoch"]
    assert (run / "curves.png").stat().st_size > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "train loss" in lines[0] and "val" not in lines[0]


def test_evaluate_on_an_empty_split_names_it():
    empty = Split(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    loader = TensorLoader(empty, batch_size=10, shuffle=False, seed=0, mean=(0.5,), std=(0.5,),
                          device=torch.device("cpu"))
    with pytest.raises(CnnkitError, match="^evaluate: split 'test' gave no batches"):
        evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), loader,
                 Classification(), split="test")
