"""Image data, the small ones of the second ring: a symlink loop in a class folder and a
dataset of one class are one line each, before any step."""

from __future__ import annotations

import os

import pytest

from tests.imagefiles import write_class_folders

SETS = ["--set", "data.name=imagefolder", "--set", "data.image_size=16", "--set",
        "model.input=[3, 16, 16]", "--set", "data.workers=0", "--set", "train.batch_size=4",
        "--set", "train.epochs=1", "--set", "data.train_size=null", "--set",
        "data.val_size=null", "--set", "model.layers=[[Flatten], [Linear, 2]]"]


def test_a_symlink_loop_in_a_class_folder_is_one_line(cli, write_config, tmp_path):
    root = write_class_folders(tmp_path / "data", counts={"train": 2, "val": 1})
    loop = root / "train" / "cat" / "loop.png"
    os.symlink(loop, loop)  # ELOOP when followed
    code, _, err = cli("train", write_config(), "--out", tmp_path / "run", *SETS,
                       "--set", f"data.root={root}")
    assert code == 2 and err.count("\n") == 1 and f"{loop}: cannot be read" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["imagefolder", "digits"])
def test_a_single_class_is_refused_before_training(cli, write_config, tmp_path, kind):
    if kind == "imagefolder":
        root = write_class_folders(tmp_path / "data", classes=("cat",),
                                   counts={"train": 2, "val": 1})
        sets = [*SETS, "--set", f"data.root={root}", "--set", "model.layers.1=[Linear, 1]"]
    else:
        sets = ["--set", "data.classes=[3]", "--set", "model.num_classes=auto",
                "--set", "model.layers.7=[Linear, 1]"]
    code, _, err = cli("train", write_config(), "--out", tmp_path / "run", *sets)
    assert code == 2 and err.count("\n") == 1 and "1 class; a classifier needs two" in err, err
    assert not (tmp_path / "run").exists()


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    """0..65535 onto 0..255; once every value past 255 read as 255 (white)."""
    import numpy as np
    from PIL import Image

    from cnnkit.data.image_files import open_image

    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    for mode in ("L", "RGB"):
        values = np.asarray(open_image(path, mode)).reshape(4, -1)[:, 0].tolist()
        assert values == [0, 100, 127, 255], (mode, values)
