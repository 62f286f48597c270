"""`train.tensorboard: true`: per-epoch scalars when the package is there, one clear line when
it is not (the import is made to fail here, whatever the environment has)."""

from __future__ import annotations

import doctest
import sys
import types

import pytest

import cnnkit.training.tensorboard
from cnnkit.errors import ConfigError
from cnnkit.training.trainer import train
from tests.conftest import FOLDER_TINY, SMALL_CONV

TINY = ("data.train_size=200", "data.val_size=100")  # two batches of 100: seconds, not tens


def test_doctests_pass():
    assert doctest.testmod(cnnkit.training.tensorboard).failed == 0


def test_missing_package_is_one_line(monkeypatch, write_config, tmp_path, cli):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import now fails
    config = write_config()
    with pytest.raises(ConfigError) as error:
        train(config, out_dir=tmp_path / "run", quiet=True, overrides=("train.tensorboard=true",))
    assert str(error.value) == (
        f"{config}: train.tensorboard: true needs the tensorboard package, which is not "
        f"installed (pip install tensorboard, or set train.tensorboard: false)")
    code, out, err = cli("train", config, "--out", tmp_path / "run2", "--set",
                         "train.tensorboard=true")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs the tensorboard package" in err
    assert not (tmp_path / "run2").exists()  # failed before the run folder was made


@pytest.mark.parametrize("data", [{"name": "mnist", "root": "no-such-mnist"},
                                  {"name": "imagefolder", "root": "no-such-photos"}])
def test_a_missing_package_is_found_before_any_data(data, monkeypatch, write_config, tmp_path,
                                                    cli):
    """Digits and class folders alike: the package is checked right after validation, so its
    error comes before the data's (whose root does not exist here) and no folder is made."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    config = {**SMALL_CONV, "data": data} if data["name"] == "mnist" else \
        {**FOLDER_TINY, "data": {**FOLDER_TINY["data"], **data}}
    code, _, err = cli("train", write_config(config), "--out", tmp_path / "run", "--set",
                       "train.tensorboard=true")
    assert code == 2 and "needs the tensorboard package" in err and "not found" not in err
    assert not (tmp_path / "run").exists()


def test_off_by_default_needs_nothing(monkeypatch, write_config, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    train(write_config(), out_dir=tmp_path / "run", quiet=True,
          overrides=(*TINY, "train.epochs=1"))
    assert not (tmp_path / "run" / "tensorboard").exists()


class FakeWriter:
    """torch.utils.tensorboard.SummaryWriter's calls, recorded (no tensorboard needed)."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir: str, purge_step: int | None = None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], 0
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, global_step, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


def test_the_logger_is_a_callback_that_writes_each_epoch_and_closes(monkeypatch, write_config,
                                                                    tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=FakeWriter))
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setattr(FakeWriter, "made", [])
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=(*TINY, "train.epochs=2", "train.tensorboard=true"))
    [writer] = FakeWriter.made
    assert writer.log_dir == str(tmp_path / "run" / "tensorboard") and writer.closed == 1
    assert [(step, value) for tag, step, value in writer.scalars if tag == "loss/val"] == [
        (row["epoch"], row["val_loss"]) for row in result.history]


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_metrics_per_epoch_and_resume(write_config, tmp_path):
    pytest.importorskip("tensorboard")
    config, run = write_config(), tmp_path / "run"
    options = (*TINY, "train.tensorboard=true")
    train(config, out_dir=run, quiet=True, overrides=(*options, "train.epochs=1"))
    result = train(config, out_dir=run, quiet=True, resume=True,
                   overrides=(*options, "train.epochs=2"))
    scalars = _scalars(run / "tensorboard")
    assert {"loss/train", "loss/val", "acc/train", "acc/val", "lr", "seconds"} <= set(scalars)
    for tag, key in (("loss/val", "val_loss"), ("acc/train", "train_acc")):
        expected = [(row["epoch"], row[key]) for row in result.history]
        assert [step for step, _ in scalars[tag]] == [1, 2]
        assert [value for _, value in scalars[tag]] == pytest.approx([v for _, v in expected])
