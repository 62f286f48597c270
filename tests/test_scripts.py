"""Smoke tests of scripts/ on the CPU: each script's --help, and its quickest real mode, run in
this process (no torch import per script) and writing only under tmp_path; and every import
that tests/test_cuda.py makes, done for real, so a rename cannot break the GPU-only file
unseen."""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import importlib
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageOps

from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import apply_override, config_from_dict
from cnnkit.infer.ensemble import evaluate_average
from cnnkit.models.builder import build_model
from cnnkit.rundir.records import read_run

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PYTHON_SCRIPTS = sorted(SCRIPTS.glob("*.py"))
# script -> the options its quick mode uses, which --help must document
QUICK_OPTIONS = {
    "bench.py": ("--sections", "--repeats", "--train-size", "--write", "--doc"),
    "recipe.py": ("--variants", "--seeds", "--set"),
    "transfer_demo.py": ("--out", "--per-class", "--seeds", "--set", "--threads"),
    "localization_canvases.py": ("--n", "--out", "--set"),
    "docs_pictures.sh": ("--quick", "--out"),
    "hand_train.py": ("--out", "--epochs"),
    "gpu_check.py": ("--cpu-dry-run", "--work", "--resume", "--steps", "--budget"),
    "gpu_check.sh": ("--cpu-dry-run", "--steps", "--budget"),  # tests/test_gpu_check.py
    "photo_folders.py": ("--train-per-class", "--val-per-class", "--classes", "--oriented-every"),
}
NUMBER = r"[-+\d.e]+"  # a printed float, as `{x:.4g}` writes it


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Batches of a few digits gain nothing from a second thread, and on a shared machine two
    threads per process wait on each other (about 3x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def script(name: str) -> dict:
    """The globals of scripts/NAME, run as a module (not as __main__)."""
    return runpy.run_path(str(SCRIPTS / name), run_name="not_main")


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_every_script_is_in_the_smoke_list():
    assert sorted(p.name for p in SCRIPTS.iterdir() if p.suffix in (".py", ".sh")) == sorted(
        QUICK_OPTIONS)


@pytest.mark.parametrize("path", PYTHON_SCRIPTS, ids=lambda p: p.name)
def test_help_prints_the_usage_and_the_quick_options(path, capsys):
    globals_ = script(path.name)
    with pytest.raises(SystemExit) as exit_:
        globals_["main"](["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    assert globals_["__doc__"].splitlines()[0] in out  # the docstring is the description
    for option in QUICK_OPTIONS[path.name]:
        assert option in out


def test_docs_pictures_help():
    done = subprocess.run(["bash", str(SCRIPTS / "docs_pictures.sh"), "--help"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: scripts/docs_pictures.sh")
    for option in QUICK_OPTIONS["docs_pictures.sh"]:
        assert option in done.stdout


def test_bench_sections_a_and_b_on_twenty_digits(tmp_path, capsys):
    doc, repo_doc = tmp_path / "BENCHMARKS.md", ROOT / "docs" / "BENCHMARKS.md"
    before = digest(repo_doc)
    code = script("bench.py")["main"](["--sections", "ab", "--train-size", "20", "--repeats", "1",
                                       "--device", "cpu", "--write", "--doc", str(doc)])
    assert code == 0
    out = capsys.readouterr().out
    rows = re.findall(rf"^\[([ab])\] .*: ({NUMBER}) vs ({NUMBER}) -> ({NUMBER})x", out, re.M)
    assert [section for section, *_ in rows] == ["a"] * 6 + ["b"] * 2
    for _, first, second, ratio in rows:
        assert float(first) > 0 and float(second) > 0  # seconds per epoch
        assert float(ratio) == pytest.approx(float(first) / float(second), rel=2e-3, abs=6e-3)
    text = doc.read_text()
    assert "<!-- bench:start cpu -->" in text and "<!-- bench:end cpu -->" in text
    assert "--train-size 20" in text  # the command that made the numbers
    assert len(re.findall(r"^\| [ab] \| course conv net", text, re.M)) == 8
    assert digest(repo_doc) == before


def test_bench_counts_an_epoch_s_flops_and_names_both_whole_processes(tmp_path):
    bench = script("bench.py")
    data = bench["build_data"](bench["DataConfig"](train_size=20, val_size=10))
    # per digit: forward 2 × (8·24·24·25 + 16·10·10·72 + 400·10) = 468,800; backward 707,200
    # (both gradients of conv2 and the Linear, only the weights' of conv1)
    assert bench["epoch_flops"](data, torch.device("cpu"), 1000) == 20 * 1_176_000
    commands = bench["whole_commands"](tmp_path, 3)
    assert commands["cnnkit"][1:4] == ["-m", "cnnkit", "train"]
    assert commands["cnnkit"][-2:] == ["--set", "train.epochs=3"]
    assert commands["hand"][1].endswith("scripts/hand_train.py")
    assert commands["hand"][-2:] == ["--epochs", "3"]


def _recipe_variant(name: str, config: str) -> tuple[dict, dict]:
    """(the config, the config with recipe.py's variant `name` applied) as raw dicts."""
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    edited = copy.deepcopy(raw)
    _, sets, edit = script("recipe.py")["variant"](name, edited)
    for item in sets:
        apply_override(edited, item)
    if edit is not None:
        edit(edited)
    return raw, edited


@pytest.mark.parametrize("config", ["mnist_plain.yaml", "mnist_best.yaml"])  # plain, residual
def test_every_recipe_variant_is_a_valid_config(config):
    for name in script("recipe.py")["VARIANTS"]:
        raw, edited = _recipe_variant(name, config)
        assert (edited == raw) == (name == "recipe"), name  # each other removes or adds one
        build_model(config_from_dict(edited, source=name))  # every layer's shapes fit


def test_recipe_width_variants_on_the_residual_net():
    """`wider`: every conv and block 9/8 as wide, within the issue's 200k parameters; `wide`
    feeds its 128 channels into the residual block after it (it kept the block's 32)."""
    count = {name: sum(p.numel() for p in build_model(config_from_dict(
        _recipe_variant(name, "mnist_best.yaml")[1])).parameters())
        for name in ("recipe", "wider", "wide")}
    assert count["recipe"] == 155_626 and count["wider"] == 193_510
    _, wide = _recipe_variant("wide", "mnist_best.yaml")
    assert [layer[:3] for layer in wide["model"]["layers"] if layer[0] == "BasicBlock"] == \
        [["BasicBlock", 128, 64], ["BasicBlock", 64, 64]]
    _, half = _recipe_variant("half-batch", "mnist_best.yaml")
    assert half["train"]["batch_size"] == 125


def test_recipe_one_variant_one_epoch_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the script's scratch sweeps
    code = script("recipe.py")["main"](["--variants", "recipe", "--seeds", "0",
                                        "--set", "train.epochs=1", "--set", "data.train_size=50",
                                        "--set", "data.val_size=20"])
    assert code == 0
    out = capsys.readouterr().out
    row = re.search(rf"^\| mnist_best: the recipe, one run \| ({NUMBER}) \| ({NUMBER}) ± "
                    rf"({NUMBER}) \| \+0.00 \| \+0.00 ± 0.00 \|", out, re.M)
    assert row[1] == row[2] and float(row[3]) == 0 and 0 <= float(row[1]) <= 100
    assert not list(tmp_path.glob("cnnkit-recipe-*"))  # its scratch sweeps are gone


def test_recipe_sweep_folder_in_use_is_one_line(tmp_path, capsys):
    """A second recipe.py on the same --out while the first one's sweep holds its folder
    (issue 28: two lanes read back the same runs): one line and exit 2, not a traceback."""
    from cnnkit.experiments.sweep import sweep_lock

    busy = tmp_path / "cv" / "mnist_best"
    busy.mkdir(parents=True)
    with sweep_lock(busy):
        code = script("recipe.py")["main"](["--variants", "recipe", "--seeds", "0",
                                            "--out", str(tmp_path / "cv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("recipe.py: error: sweep directory ") and str(busy) in err


TINY_FOLDS = ["--config", str(ROOT / "configs" / "mnist_plain.yaml"), "--folds", "2",
              "--seeds", "0", "1", "--set", "train.epochs=1",
              "--set", "data.train_per_class=3", "--set", "data.classes=[0, 1]",  # 500 val
              "--set", "model.layers.10=[Linear, 2]"]


@pytest.mark.slow  # 8 small runs through cnnkit sweep and an ensemble: ~20 s
def test_recipe_folds_are_sweeps_scored_fold_by_fold_and_resumed(tmp_path, capsys):
    """A candidate with a layer edit (its own config file), 2 folds, 2 seeds, TTA: the rows
    are the runs' own metrics and their averaged probabilities; the second command trains
    nothing and prints the same table."""
    args = [*TINY_FOLDS, "--variants", "no-dropout", "--tta",
            "--out", str(tmp_path / "cv")]
    assert script("recipe.py")["main"](args) == 0
    first = capsys.readouterr().out
    edited = tmp_path / "cv" / "mnist_plain+no-dropout"
    sweep = json.loads((edited / "sweep.json").read_text())
    assert sweep["config"] == str(edited.with_suffix(".yaml"))  # the layer edit, a file
    assert sweep["runs"]["fold=1,seed=0"]["overrides"][:2] == ["data.folds=2",
                                                                "train.epochs=1"]
    runs = {(fold, seed): read_run(edited / f"fold={fold},seed={seed}")
            for fold in (0, 1) for seed in (0, 1)}
    accs = [100 * (runs[f, 0].history[-1]["val_acc"] + runs[f, 1].history[-1]["val_acc"]) / 2
            for f in (0, 1)]
    one = re.search(rf"^\| mnist_plain: − dropout, one run \| ({NUMBER}), ({NUMBER}) \| "
                    rf"{NUMBER} ± {NUMBER} \| \+0.00, \+0.00 \|", first, re.M)
    assert [float(one[1]), float(one[2])] == pytest.approx(accs, abs=0.01)
    pair = [runs[0, 0].path / "last.pt", runs[0, 1].path / "last.pt"]
    averaged = re.search(rf"^\| mnist_plain: − dropout, 2 seeds averaged, --tta \| ({NUMBER}),"
                         rf" {NUMBER} \| {NUMBER} ± {NUMBER} \| ({NUMBER}), ", first, re.M)
    expected = 100 * evaluate_average(pair, tta=True)["accuracy"]
    assert float(averaged[1]) == pytest.approx(expected, abs=0.01)
    assert float(averaged[2]) == pytest.approx(expected - accs[0], abs=0.02)
    assert len(re.findall(r"^\| mnist_plain: − dropout, ", first, re.M)) == 4  # one run,
    # averaged, each with --tta
    assert script("recipe.py")["main"](args) == 0  # every run read back, none trained
    second = capsys.readouterr().out
    assert second.count("skipped, finished") == 4
    assert len(_rows_less_times(first)) == 4 and _rows_less_times(second) == _rows_less_times(first)
    assert re.search(r"^\| mnist_plain: − dropout, one run \|.*\| — \| {NUMBER} \|$"
                     .replace("{NUMBER}", NUMBER), second, re.M)  # no CPU time: none trained


def _rows_less_times(out: str) -> list[str]:
    """The table rows of recipe.py's output without their two time columns."""
    return [line.rsplit("|", 3)[0] for line in out.splitlines() if line.startswith("| mnist_")]


def test_transfer_demo_one_seed_one_epoch(tmp_path, capsys):
    out_dir = tmp_path / "td"
    args = ["--out", str(out_dir), "--per-class", "5", "--seeds", "1", "--set", "train.epochs=1",
            "--set", "data.train_size=100", "--set", "data.val_size=50", "--threads", "1"]
    assert script("transfer_demo.py")["main"](args) == 0
    out = capsys.readouterr().out
    assert 0 <= float(re.search(rf"pretrained on digits 0-4: val acc ({NUMBER})", out)[1]) <= 1
    row = re.search(rf"^ +5 +({NUMBER}) ± 0.000 \({NUMBER}-{NUMBER}\) +({NUMBER}) ± ", out,
                    re.M)
    assert all(0 <= float(acc) <= 1 for acc in row.groups())
    runs = {"pretrain": out_dir / "pretrain",  # the two sweeps' members, named by their values
            "transfer": out_dir / "transfer" / "train_per_class=5,seed=0",
            "scratch": out_dir / "scratch" / "train_per_class=5,seed=0"}
    for run in runs.values():
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["epochs"] == 1 and saved["data"]["train_size"] == 100  # --set
    states = {name: load_checkpoint(run / "best.pt")["model"] for name, run in runs.items()}
    convs = [key for key, value in states["pretrain"].items() if value.dim() == 4]
    assert convs
    for key in convs:  # the transfer run kept the pretrained, frozen convolutions
        assert torch.equal(states["transfer"][key], states["pretrain"][key])
        assert not torch.equal(states["scratch"][key], states["pretrain"][key])
    stamp = (runs["scratch"] / "last.pt").stat().st_mtime_ns
    assert script("transfer_demo.py")["main"](args) == 0  # run again: nothing is retrained
    assert "skipped, finished" in capsys.readouterr().out
    assert (runs["scratch"] / "last.pt").stat().st_mtime_ns == stamp


def test_localization_canvases_writes_pngs_and_their_boxes(tmp_path, capsys):
    out_dir = tmp_path / "canvases"
    code = script("localization_canvases.py")["main"](
        [str(ROOT / "configs" / "localization_mnist.yaml"), "--n", "4", "--out", str(out_dir),
         "--set", "data.train_size=10", "--set", "data.val_size=4"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for i, line in enumerate(lines):
        path, rest = line.split("  p_c ")
        assert Path(path) == out_dir / f"val_{i:04d}.png"
        image = np.asarray(Image.open(path), dtype=np.int64)
        assert image.shape == (64, 64)
        if rest == "0":
            assert image.max() == 0  # an empty canvas (the config has no noise)
            continue
        box = re.fullmatch(r"1  box (\d+) (\d+) (\d+) (\d+)  class [0-9]", rest)
        x, y, w, h = map(int, box.groups())  # pixels, rounded; (x, y) the top-left corner
        inside = image[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1].sum()
        assert inside >= 0.99 * image.sum() > 0  # the digit's ink lies in its box


def test_photo_folders_writes_upright_jpegs_in_class_folders(tmp_path, capsys):
    out = tmp_path / "photos"
    code = script("photo_folders.py")["main"](
        [str(out), "--train-per-class", "3", "--val-per-class", "2", "--oriented-every", "4"])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote 10 JPEG files under {out}"
    files = sorted(out.glob("*/*/*.jpg"))
    assert [f.relative_to(out).parts[:2] for f in files] == (
        [("train", "class_0")] * 3 + [("train", "class_1")] * 3 + [("val", "class_0")] * 2
        + [("val", "class_1")] * 2)
    tags = []
    for f in files:
        with Image.open(f) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            tags.append(image.getexif().get(0x0112))
            upright = ImageOps.exif_transpose(image)
            assert 400 <= max(upright.size) <= 560
    assert tags == [None, None, None, 6, None, None, None, None, None, 6]  # 1 in 4 of a split
    with pytest.raises(SystemExit):  # never writes into a folder that holds files
        script("photo_folders.py")["main"]([str(out)])


@pytest.mark.slow  # a fresh interpreter importing torch, torchvision and matplotlib: 4-15 s
def test_docs_pictures_quick_writes_both_pictures_elsewhere(tmp_path):
    pictures = ("saliency_mnist_conv.png", "activations_mnist_conv.png")
    before = [digest(ROOT / "docs" / name) for name in pictures]
    done = subprocess.run(["bash", str(SCRIPTS / "docs_pictures.sh"), "--quick", "--out",
                           str(tmp_path / "pictures"), sys.executable],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    for name in pictures:
        with Image.open(tmp_path / "pictures" / name) as image:
            assert image.format == "PNG" and min(image.size) > 0
    assert re.search(r"on val \(100 examples\): accuracy [\d.]+", done.stdout)
    assert [digest(ROOT / "docs" / name) for name in pictures] == before


def cuda_imports() -> list[tuple[str, str | None]]:
    """(module, name) of every `from module import name`, and (module, None) of every
    `import module`, in tests/test_cuda.py, at module level and inside functions."""
    tree = ast.parse((ROOT / "tests" / "test_cuda.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import in tests/test_cuda.py"
            found.update((node.module, alias.name) for alias in node.names)
    return sorted(found, key=lambda pair: (pair[0], pair[1] or ""))


def test_cuda_imports_include_those_inside_functions():
    inside = {(node.module, alias.name)
              for function in ast.walk(ast.parse((ROOT / "tests" / "test_cuda.py").read_text()))
              if isinstance(function, ast.FunctionDef)
              for node in ast.walk(function) if isinstance(node, ast.ImportFrom)
              for alias in node.names}
    assert inside and inside <= set(cuda_imports())


@pytest.mark.parametrize(("module", "name"), cuda_imports(),
                         ids=lambda v: v if isinstance(v, str) else "-")
def test_every_import_of_test_cuda_resolves(module, name):
    imported = importlib.import_module(module)
    if name is not None and not hasattr(imported, name):
        importlib.import_module(f"{module}.{name}")  # `from package import submodule`
