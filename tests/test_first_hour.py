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
