"""What a new user meets in the first hour (issue 24), on digit and class-folder runs alike:
eval's numbers as a person reads them, the confusion matrix's colour scale, predict's
arguments the wrong way round, and --print-config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

RUNS = ["trained_run", "trained_folder_run"]  # digits (tensor data), class folders


@pytest.mark.parametrize("fixture", RUNS)
def test_per_class_accuracy_is_the_exact_fraction(fixture, request, cli):
    run = request.getfixturevalue(fixture)[1].out_dir
    code, out, err = cli("eval", run, "--json")
    assert code == 0, err
    result = json.loads(out)
    matrix = np.array(result["confusion_matrix"])
    for k, name in enumerate(result["classes"]):
        # float64 arithmetic, not float32's noise (0.9900000095367432 for 99 of 100)
        assert result["per_class_accuracy"][name] == int(matrix[k, k]) / max(1, matrix[k].sum())


def test_the_confusion_colour_scale_starts_at_zero():
    from cnnkit.inspect.visualize import confusion_figure

    fig = confusion_figure([[20, 22], [22, 20]], ["a", "b"])
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (0, 22)  # 20 and 22 look alike, as they are


def _bad_files(root):
    """The issue's set in train/cat: a truncated JPEG, a text file named .jpg, a 1×1 PNG."""
    from PIL import Image

    from tests.imagefiles import write_image

    cut = write_image(root / "train" / "cat" / "cut.jpg", size=(64, 64))
    cut.write_bytes(cut.read_bytes()[:300])
    (root / "train" / "cat" / "text.jpg").write_text("not an image")
    Image.new("RGB", (1, 1), (200, 60, 40)).save(root / "train" / "cat" / "dot.png")
    (root / "train" / "cat" / "notes.txt").write_text("left out, counted")
    return root / "train" / "cat"


@pytest.fixture
def bad_folder(tmp_path):
    from tests.imagefiles import write_class_folders

    root = write_class_folders(tmp_path / "photos")
    return root, _bad_files(root)


def test_training_names_every_bad_file_of_the_batch_and_how_to_skip(bad_folder, cli,
                                                                     write_config, tmp_path):
    from tests.conftest import FOLDER_TINY

    root, cat = bad_folder
    config = {**FOLDER_TINY, "data": {**FOLDER_TINY["data"], "root": str(root)},
              "train": {**FOLDER_TINY["train"], "batch_size": 16}}  # one batch: every file
    code, _, err = cli("train", write_config(config), "--out", tmp_path / "run")
    assert code == 2 and err.count("cnnkit: error:") == 1, err
    error = err[err.index("cnnkit: error:"):]
    assert error.count("\n") == 1
    assert f"{cat / 'cut.jpg'}: cannot decode image" in error
    assert f"{cat / 'text.jpg'}: cannot decode image" in error
    assert "set data.skip_bad: true (--set data.skip_bad=true) to train without these 2 " \
           "files" in error
    assert f"{root}: left out 1 file that is not an image (.txt 1)" in err  # one line


@pytest.mark.parametrize("name", ["mnist_conv", "finetune_resnet18", "localization_mnist"])
def test_print_config_shows_what_applies_and_the_run_directory(name, cli, tmp_path):
    """Digits, class folders, localization: only the keys the config reads, `out` as the
    run would use it, and the printed YAML loads back to the same config."""
    from cnnkit.config import config_to_dict, load_config

    code, out, err = cli("train", name, "--print-config", "--out", tmp_path / "run")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["out"] == str(tmp_path / "run")
    localization = name == "localization_mnist"
    assert ("threshold" in printed["task"]) == localization
    assert ("localization" in printed["data"]) == localization
    assert ("class_weights" in printed["task"]) != localization
    assert ("image_size" in printed["data"]) == (name == "finetune_resnet18")
    assert ("momentum" in printed["train"]) == (printed["train"]["optimizer"] == "sgd")
    (tmp_path / "printed.yaml").write_text(out)
    again = config_to_dict(load_config(tmp_path / "printed.yaml"))
    assert again == {**config_to_dict(load_config(name)), "out": str(tmp_path / "run")}
    code, out, _ = cli("train", name, "--print-config")
    assert yaml.safe_load(out)["out"] == f"runs/{name}"  # where it would train


def _digits_tree(root):
    """An MNIST-layout tree (data.name mnist) of 120 real digits from the embedded sample."""
    from cnnkit.data.idx import write_idx
    from cnnkit.data.mnist_sample import read_sample

    images, labels = read_sample()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, part in (("train", slice(0, 5000, 50)), ("t10k", slice(25, 5000, 250))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part, 0].numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part].numpy().astype("uint8"))
    return root


def _relative_run(kind, tmp_path, monkeypatch, write_config):
    """A run trained from tmp_path/start with data.root relative ('data'): class folders or
    MNIST-layout digits."""
    from tests.conftest import FOLDER_TINY, SMALL_CONV
    from tests.imagefiles import write_class_folders

    start = tmp_path / "start"
    start.mkdir()
    if kind == "folders":
        write_class_folders(start / "data")
        config = {**FOLDER_TINY, "data": {**FOLDER_TINY["data"], "root": "data"}}
    else:
        _digits_tree(start / "data")
        config = {**SMALL_CONV, "data": {"name": "mnist", "root": "data", "val_size": 20},
                  "train": {**SMALL_CONV["train"], "batch_size": 40, "epochs": 1}}
    path = write_config(config)
    monkeypatch.chdir(start)
    from cnnkit.training.trainer import train

    train(path, out_dir=tmp_path / "run", quiet=True)
    return start, tmp_path / "run"


@pytest.mark.parametrize("kind", ["folders", "digits"])
def test_a_run_started_in_one_folder_evaluates_from_any_other(kind, tmp_path, monkeypatch,
                                                              write_config, cli):
    from cnnkit.checkpoint import load_checkpoint

    start, run = _relative_run(kind, tmp_path, monkeypatch, write_config)
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]
    assert saved == str(start / "data")  # absolute in config.yaml
    assert load_checkpoint(run / "best.pt")["config"]["data"]["root"] == saved
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = cli("eval", run, "--json")
    assert code == 0 and json.loads(out)["n"] > 0, err
    code, _, err = cli("export", run, "--out", "slim.pt")
    assert code == 0, err
    assert load_checkpoint(elsewhere / "slim.pt")["config"]["data"]["root"] == "data"  # stripped


@pytest.mark.parametrize("kind", ["folders", "digits"])
def test_resume_follows_old_relative_runs_and_data_that_moved(kind, tmp_path, monkeypatch,
                                                              write_config, cli):
    """A run saved before roots were stored absolute (config.yaml and last.pt relative)
    resumes from its folder; data moved elsewhere resumes with --set data.root when it has
    the same classes and counts, and is refused when it differs."""
    import shutil

    from cnnkit.checkpoint import load_checkpoint, save_checkpoint

    start, run = _relative_run(kind, tmp_path, monkeypatch, write_config)
    state = load_checkpoint(run / "last.pt", for_resume=True)
    state["config"]["data"]["root"] = "data"  # as runs were saved before
    del state["data_sizes"]
    save_checkpoint(run / "last.pt", state)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["root"] = "data"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, _, err = cli("resume", run, "--set", "train.epochs=2", "--quiet")
    assert code == 0, err
    moved = tmp_path / "moved"
    shutil.move(start / "data", moved)
    code, _, err = cli("resume", run, "--set", "train.epochs=3", "--set",
                       f"data.root={moved}", "--quiet")
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(moved)
    # fewer examples now: refused, naming both
    victim = next(p for p in sorted((moved / "train").rglob("*.*"))) if kind == "folders" \
        else None
    if victim is not None:
        victim.unlink()
    else:
        _digits_tree(tmp_path / "other")
        from cnnkit.data.idx import read_idx, write_idx

        raw = tmp_path / "other" / "MNIST" / "raw"
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            write_idx(raw / name, read_idx(raw / name)[:90])
        moved = tmp_path / "other"
    code, _, err = cli("resume", run, "--set", "train.epochs=4", "--set",
                       f"data.root={moved}", "--quiet")
    assert code == 2 and "resume continues the same run: point data.root at the same data" \
        in err and err.count("\n") == 1, err


@pytest.mark.parametrize("fixture", [*RUNS, "trained_localization_run"])
def test_predict_skip_bad_writes_every_good_row_and_lists_the_bad(fixture, request, cli,
                                                                  bad_folder, tmp_path):
    """The issue's folder (a truncated JPEG, a text file named .jpg, a 1×1 PNG, a .txt) on
    digits, class folders and localization: without --skip-bad one line naming both bad files
    and the flag; with it a CSV row for every good image (the 1×1 one among them, warned of),
    a label column from the class folders, and the 2 bad files listed at the end."""
    import csv

    run = request.getfixturevalue(fixture)[1].out_dir
    root, cat = bad_folder
    code, _, err = cli("predict", run, root / "train", "--csv", tmp_path / "p.csv")
    assert code == 2 and "cut.jpg: cannot decode image" in err and "text.jpg" in err
    assert "pass --skip-bad" in err and not (tmp_path / "p.csv").exists()
    code, out, err = cli("predict", run, root / "train", "--csv", tmp_path / "p.csv",
                         "--skip-bad")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    good = sorted(str(p) for p in (root / "train").rglob("*") if p.is_file()
                  and p.suffix != ".txt" and p.name not in ("cut.jpg", "text.jpg"))
    assert sorted(r["image"] for r in rows) == good and out.startswith(f"wrote {len(good)} ")
    assert "skipped 2 of" in err and f"  {cat / 'cut.jpg'}: cannot decode image" in err
    assert f"  {cat / 'text.jpg'}: cannot decode image" in err
    assert f"1 image smaller than 8 pixels on a side (first: {cat / 'dot.png'})" in err
    assert "left out 1 file that is not an image (.txt 1)" in err
    folder_run = fixture == "trained_folder_run"  # its classes are cat and dog: labels known
    assert ("label" in rows[0]) == folder_run
    if folder_run:
        assert all(r["label"] == r["image"].split("/")[-2] for r in rows)


def test_predict_arguments_the_wrong_way_round_are_named(trained_run, cli, tmp_path):
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "digit.jpg")
    run = trained_run[1].out_dir
    code, _, err = cli("predict", tmp_path / "digit.jpg", run)
    assert code == 2 and err.count("\n") == 1 and "weights_only" not in err
    assert f"an image where the checkpoint goes; the checkpoint or run directory comes first: " \
           f"cnnkit predict {run} {tmp_path / 'digit.jpg'}" in err


def test_training_with_skip_bad_counts_the_same_way(bad_folder, cli, write_config, tmp_path):
    """The header counts the files found (the 2 undecodable among them); after the first
    epoch one line and run.json count the 2 skipped; the 1×1 image trains."""
    from tests.conftest import FOLDER_TINY

    root, _ = bad_folder
    config = {**FOLDER_TINY, "data": {**FOLDER_TINY["data"], "root": str(root),
                                      "skip_bad": True}}
    code, out, err = cli("train", write_config(config), "--out", tmp_path / "run")
    assert code == 0, err
    assert "data imagefolder: 11 train, 4 val;" in out  # 8 written + cut, text and dot
    assert err.count("skipped 2 of 11 images that cannot be decoded (data.skip_bad)") == 1
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["skipped"] == {"train": 2} and manifest["status"] == "finished"


@pytest.mark.parametrize("fixture", RUNS)
def test_validation_shows_a_progress_bar_in_a_terminal(fixture, request, monkeypatch):
    import io
    import sys

    from cnnkit.data import build_data
    from cnnkit.infer.model import load_predictor
    from cnnkit.runtime.evaluate import evaluate

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    predictor = load_predictor(request.getfixturevalue(fixture)[1].out_dir)
    data = build_data(predictor.cfg.data)
    loader = data.loader("val", batch_size=2, shuffle=False, seed=0,
                         device=predictor.device)
    for bar in (True, False):
        monkeypatch.setattr(sys, "stderr", Terminal())
        evaluate(predictor.model, loader, predictor.task, bar=bar)
        assert ("val:   0%" in sys.stderr.getvalue()) == bar, sys.stderr.getvalue()


def test_runs_never_overwrite_the_run_name_with_a_key_named_name(tmp_path, cli):
    """train.schedule.name differs between runs: its column is the full dotted key, and the
    name column keeps the runs' names, in the table and in --csv."""
    import csv
    import io

    from tests.test_runs import make_run

    for name, schedule in (("a", "constant"), ("b", "cosine"), ("c", "constant")):
        run = make_run(tmp_path / name, acc=(0.5, 0.6))
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["schedule"] = {"name": schedule}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = cli("runs", tmp_path / "a", tmp_path / "b", tmp_path / "c", "--csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert [r["train.schedule.name"] for r in rows] == ["constant", "cosine", "constant"]
    code, out, _ = cli("runs", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert out.splitlines()[0].split()[:2] == ["name", "train.schedule.name"]
    assert [line.split()[:2] for line in out.splitlines()[1:4]] == [
        ["a", "constant"], ["b", "cosine"], ["c", "constant"]]


def test_runs_show_structured_values_as_a_hash_with_a_legend(tmp_path, cli):
    from tests.test_runs import make_run

    for name, width in (("small", 10), ("wide", 64)):
        run = make_run(tmp_path / name, acc=(0.5,))
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["model"]["layers"] = [["Flatten"], ["Linear", width], ["ReLU"], ["Linear", 10]]
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = cli("runs", tmp_path / "small", tmp_path / "wide")
    assert code == 0, err
    table, legend = out.split("\n\n")[:2]
    assert all(len(line) <= 100 for line in out.splitlines())
    marks = [line.split()[1] for line in table.splitlines()[1:]]
    assert len(set(marks)) == 2 and all(m.startswith("#") for m in marks)
    assert [line.split()[0] for line in legend.splitlines()] == marks
    assert "model.layers = [[Flatten],[Linear,64]" in legend
