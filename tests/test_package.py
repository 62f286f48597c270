"""From `pip install` to your own images (issue 15): configs shipped in the package and found
by name, heads and inputs that follow the data, fit warnings, class weights and balanced
metrics, the embedded sample's file, EXIF orientation, inverted images, sample images."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cnnkit.config import SHIPPED, config_path, load_config, shipped_configs
from cnnkit.data.image_files import open_image
from cnnkit.errors import ConfigError, DataError
from cnnkit.models.builder import build_model
from cnnkit.tasks.classification import Classification
from cnnkit.training.fit import FitWarning
from tests.conftest import CONFIGS, ROOT
from tests.imagefiles import write_image

# -- configs by name ---------------------------------------------------------------------


def test_the_top_level_configs_folder_is_the_packaged_one():
    assert CONFIGS.resolve() == SHIPPED.resolve()
    assert set(shipped_configs()) == {p.stem for p in CONFIGS.glob("*.yaml")}


def test_a_bare_name_finds_a_shipped_config_and_a_file_on_disk_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("mnist_conv") == SHIPPED / "mnist_conv.yaml"
    assert config_path("mnist_conv.yaml") == SHIPPED / "mnist_conv.yaml"
    (tmp_path / "mnist_conv.yaml").write_text((SHIPPED / "mnist_dense.yaml").read_text())
    assert config_path("mnist_conv.yaml") == Path("mnist_conv.yaml")  # on disk wins
    assert load_config("mnist_conv.yaml").model.layers[0] == ["Flatten"]
    with pytest.raises(ConfigError, match="nor a config shipped with cnnkit; did you mean "
                                          "'resnet18'"):
        load_config("resnet81")


def test_configs_lists_name_task_parameters_input_description(cli, monkeypatch, tmp_path):
    """From the table generated ahead of time, and afresh for a config whose bytes differ
    from it (an edited install): the same rows, descriptions whole sentences."""
    from cnnkit.inspect import catalogue

    two = {name: SHIPPED / f"{name}.yaml" for name in ("localization_mnist", "mnist_conv")}
    monkeypatch.setattr(catalogue, "shipped_configs", lambda: two)
    for table in (catalogue.TABLE, tmp_path / "none.json"):
        monkeypatch.setattr(catalogue, "TABLE", table)
        code, out, _ = cli("configs")
        lines = out.splitlines()
        assert code == 0 and lines[0].split() == ["name", "task", "parameters", "input",
                                                  "description"]
        assert lines[2].split()[:4] == ["mnist_conv", "classification", "5,386", "1×28×28"]
        assert lines[2].endswith("The course's model2: a small conv net on the MNIST sample.")
        assert lines[1].split()[:4] == ["localization_mnist", "localization", "587,183",
                                        "1×64×64"]


@pytest.mark.slow  # a fresh interpreter
def test_the_configs_table_is_current_and_configs_loads_no_torch():
    """configs/catalogue.json describes every shipped config as it is now (regenerate: python
    -m cnnkit.inspect.catalogue), and `cnnkit configs` reads it without importing torch."""
    from cnnkit.inspect import catalogue

    assert catalogue.TABLE.read_text(encoding="utf-8") == catalogue.generate()
    code = ("import sys; from cnnkit.cli import main; main(['configs']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.count("\n") == 1 + len(shipped_configs()), \
        done.stderr


def test_config_prints_a_shipped_config_to_copy(cli):
    code, out, _ = cli("config", "mnist_conv")
    assert code == 0 and out == (SHIPPED / "mnist_conv.yaml").read_text()
    code, _, err = cli("config", "resnet1")
    assert code == 2 and "did you mean 'resnet18'?" in err


def test_print_config_prints_the_resolved_config_and_trains_nothing(cli, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("train", "resnet18", "--print-config", "--set", "data.image_size=64")
    printed = yaml.safe_load(out)
    assert code == 0 and printed["model"]["input"] == [3, 64, 64]
    assert printed["model"]["num_classes"] == "auto" and not (tmp_path / "runs").exists()


# -- heads and inputs that follow the data ----------------------------------------------


def test_num_classes_sizes_every_head_and_falls_back_without_data():
    with torch.device("meta"):
        assert build_model("resnet18").output_shape == (1000,)  # ImageNet's fallback
        two = build_model("googlenet", overrides=("data.classes=[ants, bees]",
                                                  "data.image_size=96"))
        assert build_model("localization_mnist").output_shape == (15,)  # 5 + 10 digits
    assert two.input_shape == (3, 96, 96) and two.output_shape == (2,)
    assert two.aux1.fc2.out_features == two.aux2.fc2.out_features == two.fc.out_features == 2


def test_num_classes_null_with_a_layer_that_needs_it_is_named(write_config):
    raw = {"model": {"input": [1, 28, 28], "layers": [["Flatten"], ["Linear", "num_classes"]]}}
    with pytest.raises(ConfigError, match=r"model.layers.1 \(Linear\): refers to num_classes, "
                                          r"but model.num_classes is null"):
        build_model(write_config(raw))


# -- class weights and balanced metrics --------------------------------------------------


def test_balanced_metrics_show_a_majority_class_predictor():
    task = Classification()
    target = torch.tensor([0] * 8 + [1] * 2)
    logits = torch.tensor([[1.0, 0.0]] * 10)  # always class 0
    metrics = task.summarize(task.stats(logits, target, torch.tensor(0.5)))
    assert metrics["acc"] == pytest.approx(0.8)
    assert metrics["balanced_acc"] == pytest.approx(0.5)  # recalls 1 and 0
    assert metrics["macro_f1"] == pytest.approx((2 * 8 / 18 + 0) / 2)


def test_class_weights_weight_the_loss():
    weighted = Classification(class_weights=[1.0, 3.0])
    logits, target = torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 1, 1])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]))
    assert weighted.loss(logits, target) == pytest.approx(expected.item())


def _uneven_folders(root: Path) -> Path:
    """12 'cat' and 2 'dog' training images (6 to 1), 2 of each to validate, 16×16."""
    colors = {"cat": (200, 60, 40), "dog": (40, 60, 200)}
    for split, counts in (("train", {"cat": 12, "dog": 2}), ("val", {"cat": 2, "dog": 2})):
        for name, n in counts.items():
            for i in range(n):
                write_image(root / split / name / f"{i}.png", color=colors[name], seed=i,
                            size=(16, 16))
    return root


def test_class_weights_auto_and_balanced_monitor_on_an_uneven_folder_set(cli, write_config,
                                                                         tmp_path):
    raw = {"model": {"num_classes": "auto", "layers": [
               ["Conv2d", 3, 4, 3], ["ReLU"], ["AdaptiveAvgPool2d", 1], ["Flatten"],
               ["Linear", "num_classes"]]},
           "data": {"name": "imagefolder", "root": str(_uneven_folders(tmp_path / "photos")),
                    "image_size": 16, "workers": 0},
           "task": {"class_weights": "auto"},
           "train": {"batch_size": 4, "epochs": 2, "monitor": "val_balanced_acc"}}
    with pytest.warns(FitWarning) as warned:
        code, out, err = cli("train", write_config(raw), "--out", tmp_path / "run")
    assert code == 0, err
    lines = [str(w.message) for w in warned]
    assert not any("out of balance" in line for line in lines)  # class_weights: auto is set
    assert any("8 optimizer steps in all (4 steps per epoch × 2 epochs; 14 training examples, "
               "train.batch_size 4), fewer than 100: train.epochs 25 gives 100 or more" in line
               for line in lines)
    # out of balance: the console's epoch line shows balanced accuracy and macro-F1, not acc
    epoch = next(line for line in out.splitlines() if line.startswith("epoch   2/2"))
    assert " bal_acc " in epoch and " f1 " in epoch and " acc " not in epoch
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"]["class_weights"] == pytest.approx([14 / 24, 14 / 4], abs=1e-6)
    assert (saved["model"]["num_classes"], saved["model"]["input"]) == (2, [3, 16, 16])
    with open(tmp_path / "run" / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert {"val_balanced_acc", "val_macro_f1", "train_balanced_acc"} <= set(row)


def test_fit_warnings_suggest_a_value_and_cap_workers_quietly(monkeypatch):
    from cnnkit.data import build_data
    from cnnkit.training import fit

    cfg = load_config(CONFIGS / "mnist_conv.yaml", ["data.train_size=300", "data.val_size=100",
                                                    "train.batch_size=500"])
    data = build_data(cfg.data)
    data.workers = 3  # as class folders have; the sample decodes nothing
    monkeypatch.setattr(fit, "available_cpus", lambda: 2)
    lines = fit.fit_warnings(cfg, data, [30] * 10)
    assert lines == [
        "train.batch_size 500 is larger than the training split (300 examples): every step "
        "sees the whole split; train.batch_size 30 gives 10 steps per epoch",
        "30 optimizer steps in all (1 step per epoch × 30 epochs; 300 training examples, "
        "train.batch_size 500), fewer than 100: train.batch_size 75 or train.epochs 100 gives "
        "100 or more"]
    assert data.workers == 2  # capped without a warning: the zoo's workers: 8 on 2 cores
    unbalanced = fit.fit_warnings(load_config(CONFIGS / "mnist_conv.yaml",
                                              ["train.batch_size=10"]), data, [60] + [6] * 9)
    assert unbalanced == [
        "classes out of balance: '0' has 60 training examples, '1' 6 (more than 5 times as "
        "many); consider train.monitor: val_balanced_acc and task.class_weights: auto"]


@pytest.mark.parametrize("name", ["mnist_conv", "finetune_resnet18"])
def test_shipped_configs_used_as_designed_warn_of_nothing(name, monkeypatch):
    """mnist_conv on its sample (4,000 digits), finetune_resnet18 on the 244 photos it is
    sized for (2 classes), on a 2-core machine."""
    from cnnkit.data import Data
    from cnnkit.data.tensors import Split
    from cnnkit.training import fit

    monkeypatch.setattr(fit, "available_cpus", lambda: 2)
    n = 4000 if name == "mnist_conv" else 244
    split = Split(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n) % 2)
    data = Data({"train": split}, ["a", "b"], (0.5,), (0.5,))
    assert fit.fit_warnings(load_config(CONFIGS / f"{name}.yaml"), data, [n // 2] * 2) == []


def test_warnings_from_the_python_api_print_no_source_line():
    """A FitWarning as Python's own printer shows it (cnnkit.train() from a script): the
    message alone, not the line of cnnkit's source that issued it."""
    import warnings

    from cnnkit.data import build_data
    from cnnkit.training.fit import fit_to_data

    cfg = load_config(CONFIGS / "mnist_conv.yaml", ["data.train_size=300", "data.val_size=100",
                                                    "train.batch_size=100", "train.epochs=1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_to_data(cfg, build_data(cfg.data))
    (warned,) = caught
    text = warnings.formatwarning(warned.message, warned.category, warned.filename,
                                  warned.lineno, warned.line)
    assert text.startswith("cnnkit:0: FitWarning: 3 optimizer steps in all (3 steps per epoch")
    assert text.count("\n") == 1 and "fit_to_data" not in text


def test_warnings_are_one_line_each_from_the_console_script(tmp_path, monkeypatch):
    """As `cnnkit` (main without argv), a warning is one `cnnkit: warning:` line."""
    import warnings

    from cnnkit import cli

    monkeypatch.setattr(sys, "argv", ["cnnkit", "--version"])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after
    # as the console script, main() ignores Ctrl-C once the command is done (the interpreter's
    # shutdown); this test process goes on: its handler back, or a later test's real SIGINT
    # (test_ring2_console) is ignored on this worker
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main() == 0
    finally:
        signal.signal(signal.SIGINT, handler)
    out = tmp_path / "err.txt"
    with out.open("w") as f:
        warnings.showwarning(FitWarning("data.workers 8 is more than the 2 CPUs"), FitWarning,
                             "x.py", 1, file=f)
    assert out.read_text() == "cnnkit: warning: data.workers 8 is more than the 2 CPUs\n"


def test_a_closed_pipe_ends_quietly(cli, monkeypatch):
    from cnnkit.cli import summary

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(summary, "run", closed)
    code, _, err = cli("summary", "mnist_conv")
    assert code == 141 and err == ""


# -- images --------------------------------------------------------------------------------


def test_exif_orientation_turns_the_image_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    image = Image.new("RGB", (40, 20), (255, 255, 255))  # stored 40 wide, 20 high
    image.paste((0, 0, 0), (0, 0, 10, 20))  # a black band on the stored left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(path, exif=exif)
    upright = open_image(path)
    assert upright.size == (20, 40)  # displayed 20 wide, 40 high
    assert upright.getpixel((10, 2))[0] < 60  # the band is now on top
    assert upright.getpixel((10, 37))[0] > 200


@pytest.mark.slow  # a fresh interpreter
def test_opening_an_image_leaves_torchvision_alone():
    """Inference opens its images as training does, without torchvision's transforms."""
    code = ("import sys; from cnnkit.data.image_files import open_image; "
            "print(sorted(m for m in sys.modules if m.startswith('torchvision')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert found.strip() == "[]"


def test_a_csv_line_names_the_image_it_cannot_decode(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"^train.csv line 3: cannot decode image .*bad.png \("):
        open_image(bad, where="train.csv line 3")
    with pytest.raises(DataError, match=r"bad.png: cannot decode image \("):
        open_image(bad)


def test_sample_images_then_predict_warns_of_inverted_brightness(cli, trained_run, tmp_path):
    _, result = trained_run
    code, out, _ = cli("sample-images", tmp_path / "samples")
    assert code == 0 and out.startswith("wrote 10 images in")
    seven = tmp_path / "samples" / "digit_7.png"
    assert Image.open(seven).size == (28, 28)
    paper = tmp_path / "paper_7.png"
    Image.eval(Image.open(seven), lambda v: 255 - v).save(paper)  # dark on light
    best = result.out_dir / "best.pt"
    code, plain, err = cli("predict", best, seven, "--top", "1")
    assert code == 0 and "warning" not in err
    code, _, err = cli("predict", best, paper, "--top", "1")
    assert code == 0 and "paper_7.png: a light background" in err and "pass --invert" in err
    code, flipped, err = cli("predict", best, paper, "--top", "1", "--invert")
    assert code == 0 and "warning" not in err
    assert flipped.split(": ")[1] == plain.split(": ")[1]  # the same class and probability


# -- the installed package -----------------------------------------------------------------


@pytest.mark.slow
def test_installed_package_trains_resnet18_by_name_and_predicts(tmp_path):
    """The issue's "Done means": the package installed as `pip install .` installs it (a wheel
    built, no editable link), then from an empty folder `cnnkit train resnet18` on two class
    folders and `cnnkit predict` on its best.pt."""
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    shutil.copytree(ROOT / "cnnkit", source / "cnnkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", "--target", str(site), str(source)], check=True)
    assert {p.name for p in (site / "cnnkit" / "configs").glob("*.yaml")} == {
        p.name for p in CONFIGS.glob("*.yaml")}
    assert (site / "cnnkit" / "data" / "files" / "NOTICE.md").is_file()
    info = next(site.glob("cnnkit-*.dist-info"))
    metadata = (info / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata and "mlxtend" not in metadata
    assert (info / "licenses" / "LICENSE").is_file()
    photos, empty = tmp_path / "photos", tmp_path / "empty"
    for split, n in (("train", 4), ("val", 1)):
        for name, color in (("ants", (200, 60, 40)), ("bees", (40, 60, 200))):
            for i in range(n):
                write_image(photos / split / name / f"{i}.jpg", color=color, seed=i)
    empty.mkdir()
    script = (
        "import sys, cnnkit; from cnnkit.cli import main\n"
        f"assert cnnkit.__file__.startswith({str(site)!r}), cnnkit.__file__\n"
        f"assert main(['train', 'resnet18', '--set', 'data.root={photos}', '--set', "
        f"'data.image_size=64', '--set', 'train.epochs=2', '--quiet']) == 0\n"
        f"sys.exit(main(['predict', 'runs/resnet18/best.pt', '{photos}/val/bees/0.jpg', "
        f"'--top', '1']))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", script], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(": ")[1].split()[0] in ("ants", "bees")


# -- mnist: the split in use, and sizes -----------------------------------------------------


def _mnist_files(root: Path, prefix: str, n: int) -> None:
    from cnnkit.data.idx import write_idx

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(0)
    write_idx(raw / f"{prefix}-images-idx3-ubyte",
              torch.randint(0, 256, (n, 28, 28), generator=rng, dtype=torch.uint8).numpy())
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", (torch.arange(n) % 10).byte().numpy())


def test_eval_on_the_mnist_test_split_reads_the_t10k_files_alone(cli, trained_run, tmp_path):
    _, result = trained_run
    _mnist_files(tmp_path / "mnist", "t10k", 30)  # no train files at all
    code, out, err = cli("eval", result.out_dir / "best.pt", "--split", "test", "--set",
                         "data.name=mnist", "--set", f"data.root={tmp_path / 'mnist'}")
    assert code == 0, err
    assert "on test (30 examples)" in out


def test_mnist_split_errors_name_the_keys_set_or_their_defaults(tmp_path):
    from cnnkit.data import build_data
    from cnnkit.errors import DataError
    from cnnkit.schema import DataConfig

    _mnist_files(tmp_path, "train", 100)
    with pytest.raises(DataError, match=r"^data.val_size's default 5000: the MNIST training "
                                        r"files hold 100 digits; at most 99 leaves a training"):
        build_data(DataConfig(name="mnist", root=str(tmp_path)), splits=("train", "val"))
    with pytest.raises(DataError, match=r"^data.train_size 90 \+ data.val_size 20: the MNIST "
                                        r"training files hold 100 digits; together at most 100"):
        build_data(DataConfig(name="mnist", root=str(tmp_path), train_size=90, val_size=20),
                   splits=("train", "val"))
    data = build_data(DataConfig(name="mnist", root=str(tmp_path), val_size=20),
                      splits=("train", "val"))
    assert (len(data.splits["train"]), len(data.splits["val"])) == (80, 20)


# -- a CLI that explains itself -------------------------------------------------------------


def _pages(parser, name="cnnkit"):
    """(name, parser) of every subcommand page, nested ones (visualize PICTURE) too."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _pages(sub, f"{name} {sub_name}")


def test_every_subcommand_has_a_description_examples_and_help_for_every_argument():
    from cnnkit.cli import COMMANDS, build_parser

    pages = dict(_pages(build_parser()))
    assert {f"cnnkit {c}" for c in COMMANDS} <= set(pages)
    for name, page in pages.items():
        assert page.description, f"{name}: no description"
        top = name.split()[1]
        examples = (pages[f"cnnkit {top}"].epilog or "")
        assert examples.startswith("examples:\n") and re.search(
            rf"^  cnnkit {top}( |$)", examples, re.M), name
        for action in page._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
    assert "train.lr=0.001" not in pages["cnnkit eval"].format_help()
