"""mnist-localization canvases and the localization-csv loader, with its errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data import build_data
from cnnkit.data.localization import INK, digit_sets, make_canvases
from cnnkit.data.mnist_sample import read_sample
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig, LocalizationDataConfig


def _canvases(count=200, seed=0, **options):
    images, labels = read_sample()
    loc = LocalizationDataConfig(**{"size": 48, "digit_size": [14, 40], **options})
    return make_canvases(images[:300], labels[:300], count, loc,
                         generator=torch.Generator().manual_seed(seed))


def test_canvas_boxes_hold_all_the_ink_and_touch_it():
    split = _canvases()
    size = split.images.shape[-1]
    assert split.images.dtype == torch.uint8 and split.images.shape == (200, 1, size, size)
    for image, target in zip(split.images, split.labels):
        ink = image[0] >= INK
        if target[0] == 0:
            assert not ink.any()
            continue
        x, y, w, h = (round(float(v) * size) for v in target[1:5])
        inside = torch.zeros_like(ink)
        inside[y:y + h, x:x + w] = True
        assert ink[inside].any() and not ink[~inside].any()
        assert ink[y, x:x + w].any() and ink[y + h - 1, x:x + w].any()  # tight: top, bottom rows
        assert ink[y:y + h, x].any() and ink[y:y + h, x + w - 1].any()  # and side columns


def test_canvases_are_a_function_of_the_seed():
    a, b, c = _canvases(seed=3), _canvases(seed=3), _canvases(seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_empty_share_sizes_classes_and_noise():
    split = _canvases(count=400, empty=0.25, noise=0.1)
    has = split.labels[:, 0]
    assert has.sum().item() == 300  # exactly 1 - 0.25 of 400
    sides = split.labels[has > 0, 3:5] * 48
    assert sides.max() <= 40 and sides.min() >= 1
    assert set(split.labels[has > 0, 5].long().tolist()) <= set(range(10))
    empty = split.images[has == 0].float()
    assert 5 < empty.std() < 40  # noise of std 0.1 × 255, clipped at 0
    quiet = _canvases(count=400, empty=0.25)
    assert quiet.images[quiet.labels[:, 0] == 0].max() == 0


def test_train_and_val_canvases_come_from_disjoint_digits():
    train, val = digit_sets()
    assert len(train) == 4000 and len(val) == 1000
    assert not set(train.tolist()) & set(val.tolist())
    data = build_data(DataConfig(name="mnist-localization", train_size=300, val_size=100))
    assert data.classes == [str(d) for d in range(10)] and data.input_shape == (1, 64, 64)
    assert len(data.splits["train"]) == 300 and len(data.splits["val"]) == 100


# localization-csv ---------------------------------------------------------------------------

def _write_set(root, rows_by_split, sizes=None):
    """Images with a white rectangle where the box is; CSVs as given (strings)."""
    root.mkdir(exist_ok=True)
    sizes = sizes or {}
    for split, rows in rows_by_split.items():
        lines = ["path,x,y,w,h,label"]
        for path, x, y, w, h, label in rows:
            width, height = sizes.get(path, (40, 30))
            if not (root / path).exists() and not path.startswith("missing"):
                array = np.zeros((height, width, 3), dtype=np.uint8)
                if label and x not in ("", "oops"):
                    x0, y0 = int(float(x)), int(float(y))
                    array[y0:y0 + int(float(h)), x0:x0 + int(float(w))] = 255
                Image.fromarray(array).save(root / path)
            lines.append(",".join(str(v) for v in (path, x, y, w, h, label)))
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


GOOD = {
    "train": [("a.png", 4, 3, 10, 12, "cat"), ("b.png", 0, 0, 40, 30, "dog"),
              ("c.png", "", "", "", "", "")],
    "val": [("d.png", 20, 10, 20, 20, "dog")],
}


def _csv_config(root, **options):
    return DataConfig(name="localization-csv", root=str(root),
                      localization=LocalizationDataConfig(size=16, **options))


def test_csv_set_loads_with_fractions_and_classes(tmp_path):
    root = _write_set(tmp_path / "set", GOOD, sizes={"b.png": (40, 30)})
    data = build_data(_csv_config(root))
    assert data.classes == ["cat", "dog"] and data.input_shape == (3, 16, 16)
    assert list(data.splits) == ["train", "val"]
    labels = data.splits["train"].labels
    assert torch.allclose(labels[0], torch.tensor([1, 4 / 40, 3 / 30, 10 / 40, 12 / 30, 0]))
    assert torch.allclose(labels[1], torch.tensor([1, 0, 0, 1, 1, 1.0]))
    assert labels[2].tolist() == [0.0] * 6
    image = data.splits["val"].images[0]  # the box [0.5, 1) × [1/3, 1) of the image is white
    assert image[:, 8:, 9:].float().mean() > 200 and image[:, :4, :6].max() == 0
    assert data.mean == pytest.approx((0.485, 0.456, 0.406))


def test_csv_grayscale_test_split_and_classes_file(tmp_path):
    root = _write_set(tmp_path / "set", {**GOOD, "test": [("e.png", 1, 1, 5, 5, "bird")]})
    (root / "classes.txt").write_text("dog\ncat\nbird\n")
    data = build_data(_csv_config(root, channels=1))
    assert data.classes == ["dog", "cat", "bird"] and data.input_shape == (1, 16, 16)
    assert list(data.splits) == ["train", "val", "test"]
    assert data.splits["train"].labels[0, 5] == 1 and data.splits["test"].labels[0, 5] == 2


@pytest.mark.parametrize(("split", "row", "message"), [
    ("train", ("missing.png", 1, 1, 5, 5, "cat"), r"train.csv line 5: image .*missing.png "
                                                  r"not found"),
    ("train", ("f.png", 30, 1, 20, 5, "cat"), r"train.csv line 5: box x=30 y=1 w=20 h=5 is "
                                              r"not inside the 40×30 image f.png"),
    ("train", ("g.png", -1, 1, 5, 5, "cat"), "train.csv line 5: box x=-1"),
    ("train", ("h.png", 1, 1, 0, 5, "cat"), "train.csv line 5: box x=1 y=1 w=0"),
    ("train", ("i.png", "oops", 1, 5, 5, "cat"), "train.csv line 5: x: expected a number of "
                                                 "pixels, found 'oops'"),
    ("val", ("j.png", 1, 1, 5, 5, "horse"), r"val.csv line 3: unknown label 'horse' "
                                            r"\(classes: cat, dog\)"),
])
def test_csv_errors_name_the_row(tmp_path, split, row, message):
    rows = {k: list(v) for k, v in GOOD.items()}
    rows[split].append(row)
    root = _write_set(tmp_path / "set", rows)
    with pytest.raises(DataError, match=message):
        build_data(_csv_config(root))


def test_csv_errors_for_the_files(tmp_path):
    root = _write_set(tmp_path / "set", GOOD)
    (root / "val.csv").write_text("file,x,y,w,h,label\n")
    with pytest.raises(DataError, match="val.csv: expected the header path,x,y,w,h,label, "
                                        "found file,x,y,w,h,label"):
        build_data(_csv_config(root))
    (root / "val.csv").unlink()
    with pytest.raises(DataError, match="val.csv: not found"):
        build_data(_csv_config(root))
    (root / "broken.png").write_bytes(b"not a png")
    _write_set(root, {"val": [("broken.png", 1, 1, 2, 2, "cat")]})
    with pytest.raises(DataError, match="val.csv line 2: cannot decode image"):
        build_data(_csv_config(root))


@pytest.mark.parametrize("key", ["classes", "train_per_class"])
def test_class_selection_is_refused_for_box_targets(key):
    cfg = DataConfig(name="mnist-localization", train_size=10, val_size=10,
                     **{key: [3] if key == "classes" else 1})
    with pytest.raises(ConfigError, match=f"data.{key}: needs one class label per image, and "
                                          "mnist-localization's targets are not class labels"):
        build_data(cfg)
