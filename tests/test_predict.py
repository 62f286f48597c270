"""`cnnkit predict`: the images are prepared as the checkpoint's dataset evaluates them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from cnnkit.checkpoint import save_checkpoint
from cnnkit.config import config_from_dict, config_to_dict
from cnnkit.data import build_data
from cnnkit.data.mnist_sample import read_sample
from cnnkit.data.preprocess import preprocessing_record
from cnnkit.infer.images import prepare
from cnnkit.infer.model import load_predictor
from cnnkit.models.builder import build_model
from tests.conftest import SMALL_CONV
from tests.imagefiles import write_class_folders

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A conv net trained one epoch on mnist-sample, and 20 of the sample's digits as PNGs."""
    from cnnkit.training.trainer import train

    base = tmp_path_factory.mktemp("predict")
    config = config_from_dict({**SMALL_CONV, "train": {**SMALL_CONV["train"], "epochs": 1}})
    train(config, out_dir=base / "run", quiet=True)
    images, labels = read_sample()
    paths = []
    for k in range(4900, 4920):  # beyond the 1,300 digits the run was trained and validated on
        path = base / f"{k}_{labels[k]}.png"
        Image.fromarray(images[k, 0].numpy(), mode="L").save(path)
        paths.append(path)
    return base / "run" / "last.pt", paths, labels[4900:4920]


def test_digits_are_read_as_the_dataset_reads_them(digits_run):
    checkpoint, paths, labels = digits_run
    predictor = load_predictor(checkpoint, device=CPU)
    assert predictor.classes == [str(d) for d in range(10)]
    x = predictor.inputs(paths)
    images, _ = read_sample()
    expected = (images[4900:4920].float() / 255 - 0.1307) / 0.3081  # mnist-sample's normalization
    assert torch.allclose(x, expected, atol=1e-6)
    results = predictor.predict(paths, top=10)
    probs = torch.tensor([[c["probability"] for c in r["top"]] for r in results])
    assert torch.allclose(probs.sum(dim=1), torch.ones(20), atol=1e-5)
    assert (probs[:, :-1] >= probs[:, 1:]).all()  # most probable first
    top1 = torch.tensor([int(r["top"][0]["class"]) for r in results])
    assert (top1 == labels).float().mean() > 0.5  # one epoch on 1,000 digits


def test_cli_prints_top_k_per_image(cli, digits_run):
    checkpoint, paths, _ = digits_run
    code, out, err = cli("predict", checkpoint, *paths[:3], "--top", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{paths[0]}: ")
    assert all(len(line.split(": ", 1)[1].split(", ")) == 3 for line in lines)
    code, out, _ = cli("predict", checkpoint, paths[0], "--json", "--top", "99")
    (result,) = json.loads(out)
    assert len(result["top"]) == 10  # at most the number of classes


def test_folder_images_are_read_as_the_eval_loader_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = write_class_folders(tmp_path / "data", counts={"train": 1, "val": 3})
    cfg = config_from_dict({
        "model": {"input": [3, 40, 40], "layers": [["Flatten"], ["Linear", 2]]},
        "data": {"name": "imagefolder", "root": str(root), "image_size": 40, "workers": 0}})
    data = build_data(cfg.data)
    (x, _), = data.loader("val", batch_size=6, shuffle=False, seed=0, device=CPU).batches(0)
    files = [root / "val" / f for f in data.splits["val"].index.files]
    mine = prepare(files, preprocessing_record(cfg))
    assert torch.allclose(mine, x, atol=1e-5)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.png", "missing.png: image not found"),
    (lambda d: (d / "text.jpg", (d / "text.jpg").write_text("hello"))[0],
     "text.jpg: cannot decode image"),
    (lambda d: d, "a folder without images"),
])
def test_unreadable_image_is_one_line(cli, digits_run, tmp_path, make, message):
    checkpoint, paths, _ = digits_run
    code, out, err = cli("predict", checkpoint, paths[0], make(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_bad_top_and_checkpoint(cli, digits_run, tmp_path):
    checkpoint, paths, _ = digits_run
    code, _, err = cli("predict", checkpoint, paths[0], "--top", "0")
    assert code == 2 and "--top: expected 1 or more classes, found 0" in err
    code, _, err = cli("predict", tmp_path / "none.pt", paths[0])
    assert code == 2 and "none.pt: checkpoint not found" in err
    code, _, err = cli("predict", checkpoint, paths[0], "--device", "tpu")
    assert code == 2 and "--device: expected auto, cpu, cuda, cuda:N or mps, found 'tpu'" in err


@pytest.fixture
def locator(tmp_path):
    """A localization checkpoint whose head ignores the image: an object (p_c 0.95) of class
    a, b or c with probabilities 0.6, 0.3, 0.1; and a grey 8×8 image."""
    cfg = config_from_dict({
        "model": {"input": [1, 8, 8], "layers": [["Flatten"], ["LocalizationHead", 3]]},
        "task": {"name": "localization"}})
    model = build_model(cfg)
    head = model[1]
    with torch.no_grad():
        for linear in (head.objectness, head.box, head.classes):
            linear.weight.zero_()
        head.objectness.bias.fill_(3.0)
        head.box.bias.zero_()
        head.classes.bias.copy_(torch.tensor([0.6, 0.3, 0.1]).log())
    path = tmp_path / "loc.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg),
                           "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.5]})
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.png")
    return path, tmp_path / "grey.png"


def test_localization_honours_top(cli, locator):
    checkpoint, image = locator
    code, out, err = cli("predict", checkpoint, image, "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["top"] == [{"class": "a", "probability": 0.6}]  # by default the box's class
    assert (result["class"], result["probability"]) == ("a", 0.6)
    code, out, _ = cli("predict", checkpoint, image, "--json", "--top", "2")
    assert [c["class"] for c in json.loads(out)[0]["top"]] == ["a", "b"]
    code, out, _ = cli("predict", checkpoint, image, "--top", "9")
    assert code == 0 and f"{image}: a (0.60), b (0.30), c (0.10) at x 4.0 y 4.0" in out
    code, _, err = cli("predict", checkpoint, image, "--top", "0")
    assert code == 2 and "--top: expected 1 or more classes, found 0" in err


def test_localization_honours_device(cli, locator):
    checkpoint, image = locator
    code, _, err = cli("predict", checkpoint, image, "--device", "tpu")
    assert code == 2 and "--device: expected auto, cpu, cuda, cuda:N or mps, found 'tpu'" in err
    assert cli("predict", checkpoint, image, "--device", "cpu")[0] == 0


@pytest.mark.cuda
def test_localization_runs_on_cuda(cli, locator):
    checkpoint, image = locator
    predictor = load_predictor(checkpoint, device=torch.device("cuda"))
    assert {p.device.type for p in predictor.model.parameters()} == {"cuda"}
    on_gpu = cli("predict", checkpoint, image, "--json", "--top", "3", "--device", "cuda")
    on_cpu = cli("predict", checkpoint, image, "--json", "--top", "3", "--device", "cpu")
    assert on_gpu[0] == 0 and json.loads(on_gpu[1]) == json.loads(on_cpu[1])


def test_localization_boxes_are_measured_in_the_upright_image(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6) is turned upright before the model
    sees it, so box_pixels must scale by the upright size, not the stored one."""
    from PIL import Image

    from cnnkit.infer.images import image_size as _size

    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (40, 20)).save(path, exif=exif)  # stored 40 wide, 20 high
    assert _size(path) == (20, 40)
    Image.new("RGB", (40, 20)).save(tmp_path / "plain.jpg")
    assert _size(tmp_path / "plain.jpg") == (40, 20)
