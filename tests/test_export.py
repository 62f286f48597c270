"""What a checkpoint is used for, through the one door: eval on other data with the run's own
preprocessing, untrusted files kept inert, predict on folders, the confusion matrix,
`cnnkit.load` and `cnnkit export`."""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cnnkit
from cnnkit.checkpoint import MAGIC, load_checkpoint, save_checkpoint
from cnnkit.config import config_from_dict
from cnnkit.data import build_data
from cnnkit.data.mnist_sample import read_sample


def test_eval_on_other_data_uses_the_checkpoints_preprocessing(trained_localization_run, cli,
                                                              tmp_path):
    """The run's own validation canvases written as a localization-csv set (grayscale PNGs and
    pixel boxes): eval with only data.name, data.root and channels overridden scores what the
    run scored on them, though localization-csv's own default normalization is ImageNet's."""
    config, result = trained_localization_run
    cfg = config_from_dict(yaml.safe_load(config.read_text()))
    val = build_data(replace(cfg.data, train_size=1)).splits["val"]  # val: train_size aside
    root = tmp_path / "canvases"
    root.mkdir()
    (root / "classes.txt").write_text("\n".join(str(d) for d in range(10)) + "\n")
    rows = []
    size = cfg.data.localization.size
    for k, (image, target) in enumerate(zip(val.images, val.labels.tolist())):
        Image.fromarray(image[0].numpy(), mode="L").save(root / f"{k}.png")
        p_c, x, y, w, h, label = target
        box = [repr(v * size) for v in (x, y, w, h)] if p_c else ["", "", "", ""]
        rows.append([f"{k}.png", *box, str(int(label)) if p_c else ""])
    for split, listed in (("train", rows[:10]), ("val", rows)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["path", "x", "y", "w", "h", "label"], *listed])
    best = result.out_dir / "best.pt"
    code, own, err = cli("eval", best, "--json", "--set", "data.train_size=1")  # the same val
    assert code == 0, err
    code, other, err = cli("eval", best, "--json", "--set", "data.name=localization-csv",
                           "--set", f"data.root={root}", "--set", "data.localization.channels=1")
    assert code == 0, err
    own, other = json.loads(own), json.loads(other)
    assert other["n"] == own["n"] == len(rows)
    for metric in ("obj_acc", "cls_acc", "iou", "accuracy"):
        assert other[metric] == pytest.approx(own[metric], abs=0.02), metric
    code, _, err = cli("eval", best, "--set", "data.name=localization-csv", "--set",
                       f"data.root={root}", "--set", "data.localization.channels=3")
    assert code == 2 and "takes 1 input channels" in err and "have 3" in err  # names both


def test_an_embedded_root_and_download_create_nothing(trained_run, cli, tmp_path):
    state = load_checkpoint(trained_run[1].out_dir / "best.pt")
    elsewhere = tmp_path / "elsewhere" / "data"
    state["config"]["data"].update(name="mnist", root=str(elsewhere), download=True)
    save_checkpoint(tmp_path / "planted.pt", state)
    code, _, err = cli("eval", tmp_path / "planted.pt")
    assert code == 2 and "MNIST train file not found" in err and err.count("\n") == 1
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """12 digits of the sample (beyond the 1,300 SMALL_CONV saw) as PNGs in nested folders."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = read_sample()
    for k in range(4900, 4912):
        folder = root / ("a" if k % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[k, 0].numpy(), mode="L").save(folder / f"{k}_{labels[k]}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_predict_on_a_folder_writes_csv(trained_run, cli, digits, tmp_path):
    run = trained_run[1].out_dir
    code, out, err = cli("predict", run, digits, "--csv", tmp_path / "p.csv", "--top", "2")
    assert code == 0 and out == "wrote 12 predictions to " + str(tmp_path / "p.csv") + "\n", err
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 12 and list(rows[0]) == ["image", "class", "probability", "class_2",
                                                 "probability_2"]
    assert rows[0]["image"].startswith(str(digits / "a" / "4901_"))  # sorted, recursive
    right = sum(r["class"] == r["image"].rsplit("_", 1)[1][0] for r in rows)
    assert right >= 8  # 2 epochs on 1,000 digits: about 0.9 accuracy
    code, out, _ = cli("predict", run, digits, "--json")
    assert [r["class"] for r in json.loads(out)] == [r["class"] for r in rows]


def test_eval_reports_the_confusion_matrix(trained_run, cli, tmp_path):
    run = trained_run[1].out_dir
    code, out, err = cli("eval", run, "--json", "--out", tmp_path / "eval")
    assert code == 0, err
    result = json.loads(out)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == result["n"] == 300
    assert np.trace(matrix) / 300 == pytest.approx(result["accuracy"])
    assert result["accuracy"] <= result["top5_accuracy"] <= 1
    assert result["per_class_accuracy"]["3"] == pytest.approx(matrix[3, 3] / matrix[3].sum())
    assert result["checkpoint"] == str(run / "best.pt")  # a run directory: its best.pt
    with Image.open(tmp_path / "eval" / "confusion.png") as png:
        assert png.format == "PNG" and png.width > 300
    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == result


def test_load_predicts_paths_pil_images_and_tensors(trained_run, digits):
    predictor = cnnkit.load(trained_run[1].out_dir)
    files = sorted(digits.rglob("*.png"))[:3]
    by_path = predictor.predict(files, top=3)
    pil = [Image.open(f) for f in files]
    tensors = [torch.from_numpy(np.array(p)).unsqueeze(0) for p in pil]  # uint8 (1, 28, 28)
    for other in (predictor.predict(pil, top=3), predictor.predict(tensors, top=3)):
        assert [r["top"] for r in other] == [r["top"] for r in by_path]
    assert by_path[0]["image"] == str(files[0]) and len(by_path[0]["top"]) == 3
    assert by_path[0]["class"] == by_path[0]["top"][0]["class"] in predictor.classes
    assert predictor.predict(digits / "a") == predictor.predict(sorted((digits / "a").glob("*")))


def test_export_is_slim_and_predicts_as_best(trained_run, cli, digits, tmp_path):
    run = trained_run[1].out_dir
    slim = tmp_path / "model.pt"
    code, out, err = cli("export", run, "--out", slim)
    assert code == 0 and out.startswith(f"wrote {slim}"), err
    state = load_checkpoint(slim)
    assert set(state) == {"model", "config", "task", "classes", "preprocessing", "format",
                          "cnnkit_version", "torch_version"}
    assert slim.read_bytes()[-44:-32] == MAGIC
    assert slim.stat().st_size < (run / "best.pt").stat().st_size / 2  # no Adam moments
    assert str(tmp_path) not in json.dumps(state["config"])  # no absolute paths
    best = cnnkit.load(run / "best.pt").predict(digits, top=10)
    assert cnnkit.load(slim).predict(digits, top=10) == best
    for args in (["eval", slim], ["summary", slim], ["visualize", slim, "filters", "--out",
                                                     tmp_path / "f.png"]):
        code, out, err = cli(*args)
        assert code == 0, (args, err)
    assert "Conv2d" in cli("summary", run)[1]


@pytest.mark.skipif(all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript",
                                                              "onnxruntime")),
                    reason="onnx is installed here: test_onnx_matches_pytorch runs instead")
def test_onnx_without_its_packages_is_one_line(trained_run, cli, tmp_path):
    code, _, err = cli("export", trained_run[1].out_dir, "--out", tmp_path / "m.pt", "--onnx",
                       tmp_path / "m.onnx")
    assert code == 2 and err.count("\n") == 1 and "--onnx: needs the" in err
    assert (tmp_path / "m.pt").is_file() and not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript",
                                                                  "onnxruntime")),
                    reason="needs onnx, onnxscript and onnxruntime")
def test_onnx_matches_pytorch(trained_run, cli, tmp_path):
    code, out, err = cli("export", trained_run[1].out_dir, "--out", tmp_path / "m.pt",
                         "--onnx", tmp_path / "m.onnx")
    assert code == 0 and "m.onnx (outputs within" in out, err


def test_localization_through_the_same_door(trained_localization_run, cli, tmp_path):
    """cnnkit.load and visualize read a localization run as they read a classifier."""
    run = trained_localization_run[1].out_dir
    canvas = np.zeros((32, 32), dtype=np.uint8)
    canvas[8:24, 12:20] = 255  # a bright bar where a digit would be
    Image.fromarray(canvas, mode="L").save(tmp_path / "bar.png")
    (result,) = cnnkit.load(run).predict(tmp_path / "bar.png", top=2)
    assert {"object", "p_object", "box", "box_pixels", "class", "probability"} <= set(result)
    assert len(result["top"]) == 2
    code, out, err = cli("visualize", run, "saliency", "--image", tmp_path / "bar.png",
                         "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
