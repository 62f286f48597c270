import pytest
import torch

from cnnkit.checkpoint import load_checkpoint
from cnnkit.errors import CnnkitError, ConfigError
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
    with pytest.raises(ConfigError, match="differs from the run's at train.lr"):
        train(write_config(), out_dir=tmp_path / "run", quiet=True, resume=True,
              overrides=("train.lr=0.1",))


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
