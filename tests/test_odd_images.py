"""Images that decode but may mislead (issue 24): a 1×1 PNG and a PNG with transparent pixels
are counted in one warning line per kind, with the first file, in training (once, from the
decode the loader's workers do anyway, and in run.json), in `cnnkit eval` and in `cnnkit
predict`; an opaque alpha channel is not counted, and tensor data (digits, localization)
has no such files and prints none of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

TINY_LINE = "image smaller than 8 pixels on a side"
ALPHA_LINE = "with transparent pixels (decoding drops the alpha channel)"


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """(root, stdout, stderr of `cnnkit train`, run dir): class folders (tests/imagefiles.py,
    whose RGBA .webp files are opaque) with a 1×1 PNG and a half-transparent PNG in train/cat
    and a 1×1 PNG in val/dog, trained 2 epochs with a worker process per loader."""
    import contextlib
    import io

    from cnnkit.cli import main
    from tests.conftest import FOLDER_TINY
    from tests.imagefiles import write_class_folders

    tmp = tmp_path_factory.mktemp("odd")
    root = write_class_folders(tmp / "photos")
    Image.new("RGB", (1, 1), (200, 60, 40)).save(root / "train" / "cat" / "dot.png")
    clear = np.full((32, 32, 4), 200, dtype=np.uint8)
    clear[:, :16, 3] = 0  # the left half transparent
    Image.fromarray(clear, mode="RGBA").save(root / "train" / "cat" / "clear.png")
    Image.new("RGB", (1, 1), (40, 60, 200)).save(root / "val" / "dog" / "dot.png")
    config = {**FOLDER_TINY, "data": {**FOLDER_TINY["data"], "root": str(root), "workers": 0},
              "train": {**FOLDER_TINY["train"], "epochs": 2}}
    path = tmp / "odd.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", str(path), "--out", str(tmp / "run"), "--quiet"])
    assert code == 0, err.getvalue()
    return root, out.getvalue(), err.getvalue(), tmp / "run"


def test_training_warns_once_per_kind_with_the_count_and_records_it(odd_run):
    root, _, err, run = odd_run
    cat = root / "train" / "cat"
    assert err.count(f"cnnkit: warning: {root / 'train'}: 1 {TINY_LINE} (first: "
                     f"{cat / 'dot.png'})\n") == 1, err
    assert err.count(f"cnnkit: warning: {root / 'train'}: 1 image {ALPHA_LINE} (first: "
                     f"{cat / 'clear.png'})\n") == 1, err  # the opaque RGBA .webp files: not
    assert err.count(f"cnnkit: warning: {root / 'val'}: 1 {TINY_LINE} (first: "
                     f"{root / 'val' / 'dog' / 'dot.png'})\n") == 1, err
    assert err.count(TINY_LINE) == 2 and err.count(ALPHA_LINE) == 1, err  # 2 epochs, once
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["odd_images"] == {"train": {"tiny": 1, "alpha": 1}, "val": {"tiny": 1}}
    assert "skipped" not in manifest


def test_eval_and_predict_warn_the_same_way(odd_run, cli):
    root, _, _, run = odd_run
    code, out, err = cli("eval", run, "--json")
    assert code == 0 and json.loads(out)["n"] == 5, err
    assert err == (f"cnnkit: warning: {root / 'val'}: 1 {TINY_LINE} (first: "
                   f"{root / 'val' / 'dog' / 'dot.png'})\n")
    code, out, err = cli("predict", run, root / "train", "--csv", run.parent / "p.csv")
    assert code == 0, err
    cat = root / "train" / "cat"
    assert sorted(err.splitlines()) == [  # in the order met
        f"cnnkit: warning: 1 {TINY_LINE} (first: {cat / 'dot.png'})",
        f"cnnkit: warning: 1 image {ALPHA_LINE} (first: {cat / 'clear.png'})"]


@pytest.mark.parametrize("fixture", ["trained_run", "trained_localization_run"])
def test_tensor_data_prints_none_of_it(fixture, request, cli, capsys):
    run = request.getfixturevalue(fixture)[1].out_dir
    capsys.readouterr()  # what training the session's run printed, where it was trained here
    code, _, err = cli("eval", run, "--json")
    assert code == 0 and err == "", err
    assert "odd_images" not in json.loads((run / "run.json").read_text())
