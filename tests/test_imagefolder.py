"""The imagefolder dataset: its index and cache, its loader, and every error it names."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from cnnkit.data import build_data, folder_index
from cnnkit.data.folder_index import cache_path
from cnnkit.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig
from tests.imagefiles import write_class_folders, write_image

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Index caches go to the test's own folder, never to ~/.cache."""
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def root(tmp_path):
    return write_class_folders(tmp_path / "data")


def folder(root, **kwargs) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), image_size=32, workers=0, **kwargs)


def test_splits_classes_and_labels(root):
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.jpg").write_bytes(b"")
    write_image(root / "train" / "dog" / "UPPER.JPG")
    data = build_data(folder(root))
    assert data.classes == ["cat", "dog"] and list(data.splits) == ["train", "val", "test"]
    assert [len(data.splits[s]) for s in data.splits] == [9, 4, 4]
    train = data.splits["train"].index
    assert train.files[:2] == ["cat/0.jpg", "cat/1.png"] and "dog/UPPER.JPG" in train.files
    assert train.labels == [0] * 4 + [1] * 5
    assert data.input_shape == (3, 32, 32)
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_test_split_is_optional(tmp_path):
    root = write_class_folders(tmp_path / "d", counts={"train": 2, "val": 1})
    data = build_data(folder(root))
    assert list(data.splits) == ["train", "val"]
    with pytest.raises(DataError, match="split 'test': this dataset has train, val"):
        data.loader("test", batch_size=2, shuffle=False, seed=0, device=CPU)


def test_second_run_reads_the_cached_index(root, cache_dir, monkeypatch):
    first = build_data(folder(root))
    cached = cache_path(root)
    assert cached.parent == cache_dir / "imagefolder" and cached.is_file()
    assert json.loads(cached.read_text())["root"] == str(root.resolve())

    def no_listing(class_dir):
        raise AssertionError(f"rescanned {class_dir}")

    monkeypatch.setattr(folder_index, "list_images", no_listing)
    second = build_data(folder(root))
    assert second.splits["train"].index == first.splits["train"].index


def test_cache_is_invalidated_by_a_changed_folder(root):
    build_data(folder(root))
    write_image(root / "train" / "dog" / "new.png")
    (root / "val" / "cat" / "0.jpg").unlink()
    data = build_data(folder(root))
    assert "dog/new.png" in data.splits["train"].index.files
    assert "cat/0.jpg" not in data.splits["val"].index.files


@pytest.mark.parametrize("text", ["{not json", '{"format": 1, "root": "ROOT", "splits": []}',
                                  '{"format": 1, "root": "ROOT", "splits": {"train": {"cat": 1}}}'])
def test_corrupt_cache_is_rescanned(root, text):
    build_data(folder(root))
    cache_path(root).write_text(text.replace("ROOT", str(root.resolve())))
    assert len(build_data(folder(root)).splits["train"]) == 8


def _batches(data, split="train", *, epoch=0, start=0, shuffle=True, batch_size=3):
    loader = data.loader(split, batch_size=batch_size, shuffle=shuffle, seed=7, device=CPU)
    return list(loader.batches(epoch, start=start))


def test_batches_are_normalized_crops_on_the_device(root):
    data = build_data(folder(root))
    batches = _batches(data, "val", shuffle=False)
    assert [x.shape for x, _ in batches] == [(3, 3, 32, 32), (1, 3, 32, 32)]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.tolist() == [0, 0, 1]
    # the cat images are reddish: channel 0 well above ImageNet's mean, channel 2 below it
    assert x[0, 0].mean() > 0.5 and x[0, 2].mean() < -0.5


def test_training_order_and_crops_are_a_function_of_seed_and_epoch(root):
    data = build_data(folder(root))
    once, again = _batches(data, epoch=1), _batches(data, epoch=1)
    for (x1, y1), (x2, y2) in zip(once, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = _batches(data, epoch=2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(once, other))
    resumed = _batches(data, epoch=1, start=1)  # mid-epoch resume from batch 1
    assert len(resumed) == len(once) - 1
    assert all(torch.equal(a[0], b[0]) for a, b in zip(once[1:], resumed))


def test_worker_processes_give_the_same_batches(root):
    data = build_data(folder(root))
    alone = _batches(data, epoch=3)
    data.workers = 2
    loader = data.loader("train", batch_size=3, shuffle=True, seed=7, device=CPU)
    for epoch in (3, 3):  # twice: persistent workers serve a second epoch
        with_workers = list(loader.batches(epoch))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(alone, with_workers))
    assert loader.loader.persistent_workers


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: (r / "val" / "dog").rename(r / "val" / "cow"),
     "val: its classes differ from train/'s: lacks dog; has cow not in train/"),
    (lambda r: (r / "test" / "owl").mkdir() or
     write_image(r / "test" / "owl" / "0.png"), "test: its classes differ from train/'s: has owl"),
    (lambda r: [p.unlink() for p in (r / "train" / "dog").iterdir()],
     "train/dog: empty class folder"),
    (lambda r: [p.unlink() for p in (r / "val" / "cat").iterdir()], "val/cat: empty class folder"),
])
def test_inconsistent_trees_are_named(root, change, message):
    change(root)
    with pytest.raises(DataError, match=message):
        build_data(folder(root))


def test_missing_folders_and_no_images(tmp_path):
    with pytest.raises(DataError, match="nowhere: data.root not found"):
        build_data(folder(tmp_path / "nowhere"))
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"d/val: not found; imagefolder needs"):
        build_data(folder(tmp_path / "d"))
    (tmp_path / "d" / "val").mkdir()
    with pytest.raises(DataError, match=r"d/train: no class folders, so no images at all"):
        build_data(folder(tmp_path / "d"))


def test_config_errors(root):
    # root, train_size and val_size: the schema's checks (tests/test_validate.py)
    with pytest.raises(ConfigError, match="did you mean 'imagefolder'"):
        build_data(DataConfig(name="imagefoldr", root=str(root)))


def test_undecodable_image_is_named(root):
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    data = build_data(folder(root))
    with pytest.raises(DataError, match=rf"{bad}: cannot decode image .*data.skip_bad: true"):
        _batches(data)


def test_truncated_image_is_named(root):
    path = write_image(root / "val" / "cat" / "cut.png", size=(64, 64))
    path.write_bytes(path.read_bytes()[:200])
    data = build_data(folder(root))
    with pytest.raises(DataError, match=f"{path}: cannot decode image"):
        _batches(data, "val", shuffle=False)


def test_skip_bad_skips_with_one_warning_that_counts(root, capsys):
    for name in ("a.jpg", "b.png"):
        (root / "train" / "cat" / name).write_bytes(b"garbage")
    data = build_data(folder(root, skip_bad=True))
    loader = data.loader("train", batch_size=4, shuffle=True, seed=0, device=CPU)
    for epoch in range(2):
        seen = sum(len(y) for _, y in loader.batches(epoch))
        assert seen == 8
    err = capsys.readouterr().err
    assert err.count("warning") == 1, err
    assert "skipped 2 of 10 images that cannot be decoded (data.skip_bad)" in err


def test_skip_bad_with_nothing_decodable_is_an_error(tmp_path):
    root = write_class_folders(tmp_path / "d", counts={"train": 1, "val": 1})
    for path in (root / "train").rglob("*.*"):
        path.write_bytes(b"garbage")
    data = build_data(folder(root, skip_bad=True))
    with pytest.raises(DataError, match="none of its 2 images could be decoded"):
        _batches(data)


def test_cli_names_the_bad_file_in_one_line(cli, root, tmp_path, write_config):
    bad = root / "val" / "dog" / "zz.webp"
    bad.write_bytes(b"RIFF....WEBPVP8 nope")
    config = write_config({
        "model": {"input": [3, 32, 32], "layers": [["Flatten"], ["Linear", 2]]},
        "data": {"name": "imagefolder", "root": str(root), "image_size": 32, "workers": 0},
        "train": {"batch_size": 4, "epochs": 1},
    })
    code, _, err = cli("train", config, "--out", tmp_path / "run", "--quiet")
    # the fit warning (2 steps) prints on stderr too where pytest does not capture warnings
    errors = [line for line in err.splitlines() if "FitWarning" not in line]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("cnnkit: error: ")
    assert f"{bad}: cannot decode image" in errors[0]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["name"] == "imagefolder"
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["cat", "dog"]


@pytest.mark.slow  # 2 trainings on class folders; fast: tests/test_train.py's resume
def test_resume_continues_exactly(root, tmp_path, write_config):
    """Two epochs straight equal one epoch and a resumed second one (worker processes crop,
    and dropout draws from the restored RNG)."""
    from cnnkit.training.trainer import train

    config = write_config({
        "model": {"input": [3, 16, 16], "layers": [["Conv2d", 3, 4, 3], ["ReLU"], ["Flatten"],
                                                   ["Dropout", 0.2], ["Linear", 2]]},
        "data": {"name": "imagefolder", "root": str(root), "image_size": 16, "workers": 2},
        "train": {"batch_size": 3, "epochs": 2, "optimizer": "sgd", "lr": 0.1},
    })
    straight = train(config, out_dir=tmp_path / "a", quiet=True).model.state_dict()
    train(config, out_dir=tmp_path / "b", quiet=True, overrides=("train.epochs=1",))
    resumed = train(config, out_dir=tmp_path / "b", quiet=True, resume=True).model.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_data_classes_and_train_per_class_pick_class_folders(tmp_path):
    root = write_class_folders(tmp_path / "d", classes=("cat", "dog", "owl"),
                               counts={"train": 4, "val": 2})
    data = build_data(folder(root, classes=["owl", "cat"], train_per_class=3))
    assert data.classes == ["owl", "cat"]  # owl is label 0 now
    train, val = data.splits["train"].index, data.splits["val"].index
    assert sorted(train.labels) == [0, 0, 0, 1, 1, 1]
    assert all(f.startswith(("owl/", "cat/")) for f in train.files + val.files)
    assert [f.split("/")[0] for f in val.files] == ["cat", "cat", "owl", "owl"]
    assert val.labels == [1, 1, 0, 0]
    x, y = next(data.loader("train", batch_size=6, shuffle=False, seed=0,
                            device=CPU).batches(0))
    assert x.shape == (6, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="class owl has only 4 training examples, 5 asked"):
        build_data(folder(root, classes=["owl"], train_per_class=5))


def test_every_command_gets_the_workers_capped_at_the_cpus(root):
    """data.workers past the CPUs (the zoo's 8 on 2 cores) is capped where the folders load,
    so eval, predict and export get it as training does (torch warned twice in `cnnkit
    eval` on a 2-core machine)."""
    from cnnkit.data.imagefolder import available_cpus

    data = build_data(DataConfig(name="imagefolder", root=str(root), image_size=32,
                                 workers=available_cpus() + 6))
    assert data.workers == available_cpus()
