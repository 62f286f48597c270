"""Cross-validation folds (data.folds, data.fold), runs without a validation split
(data.val_size: 0) and train.deterministic."""

from __future__ import annotations

import pytest
import torch

from cnnkit.checkpoint import load_checkpoint
from cnnkit.data import build_data
from cnnkit.data.mnist_sample import read_sample, stratified_folds
from cnnkit.errors import DataError
from cnnkit.schema import DataConfig
from cnnkit.training.callbacks import Callback
from cnnkit.training.trainer import train


def test_folds_cover_every_example_once_each_class_evenly():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)  # a small uneven sample
    folds = stratified_folds(labels, 3)
    joined = torch.cat(folds)
    assert sorted(joined.tolist()) == list(range(15))  # disjoint and complete
    assert [len(f) for f in folds] == [5, 5, 5]
    for fold in folds:  # each class's count differs by at most one between folds
        counts = torch.bincount(labels[fold], minlength=3).tolist()
        assert counts[0] in (2, 3) and counts[1] in (1, 2) and counts[2] == 1
    assert all(torch.equal(a, b) for a, b in zip(folds, stratified_folds(labels, 3)))  # fixed
    with pytest.raises(DataError, match="leave fold 2 empty"):
        from cnnkit.data.mnist_sample import fold_split
        fold_split(torch.tensor([0, 1]), 3, 2)


def test_the_sample_s_folds_are_stratified_and_each_validates_once():
    _, labels = read_sample()
    seen = []
    for fold in range(5):
        data = build_data(DataConfig(folds=5, fold=fold))
        train, val = data.splits["train"], data.splits["val"]
        assert (len(train), len(val)) == (4000, 1000)
        assert torch.bincount(val.labels).tolist() == [100] * 10
        assert torch.bincount(train.labels).tolist() == [400] * 10
        seen.append(val.images.flatten(1))
    images = torch.cat(seen)  # the five validation folds together are the 5,000 digits
    assert torch.equal(torch.sort(images.sum(1).to(torch.int64)).values,
                       torch.sort(read_sample()[0].flatten(1).sum(1).to(torch.int64)).values)


def test_a_fold_is_a_data_setting_of_any_run(write_config, tmp_path, cli):
    path = write_config()
    code, out, err = cli("train", path, "--out", tmp_path / "run", "--set", "data.folds=10",
                         "--set", "data.fold=3", "--set", "data.train_size=null", "--set",
                         "data.val_size=null", "--set", "train.epochs=0")
    assert code == 0, err
    code, _, err = cli("train", path, "--out", tmp_path / "bad", "--set", "data.folds=10",
                       "--set", "data.fold=10")
    assert code == 2 and "data.fold: expected a fold from 0 to 9" in err


def test_val_size_0_trains_every_digit_and_best_is_the_last_epoch(write_config, tmp_path):
    assert len(build_data(DataConfig(val_size=0)).splits["train"]) == 5000
    assert "val" not in build_data(DataConfig(val_size=0)).splits
    # the default monitor (val_acc) reads train_acc; best.pt is the last epoch even where
    # train_acc fell (lr 0.5 makes it fall)
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("data.train_size=200", "data.val_size=0", "train.epochs=3",
                              "train.lr=0.5"))
    accs = [row["train_acc"] for row in result.history]
    assert "val_acc" not in result.history[0]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 3, accs


class _Watch(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, run, row):
        self.seen.append((torch.are_deterministic_algorithms_enabled(),
                          torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))


def test_deterministic_runs_repeat_bit_for_bit_and_restore_the_settings(write_config,
                                                                          tmp_path):
    path, watch = write_config(), _Watch()
    tiny = ("data.train_size=200", "data.val_size=100", "train.epochs=1",
            "train.deterministic=true")
    first = train(path, out_dir=tmp_path / "a", quiet=True, overrides=tiny, callbacks=[watch])
    second = train(path, out_dir=tmp_path / "b", quiet=True, overrides=tiny)
    assert watch.seen == [(True, True, False)]
    assert not torch.are_deterministic_algorithms_enabled()  # the process's settings are back
    assert not torch.backends.cudnn.deterministic
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert first.history[0]["val_loss"] == second.history[0]["val_loss"]
