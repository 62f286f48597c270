"""Every command and every documented flag, run in process through `cnnkit.cli.main(argv)` on a
trained run of each kind of data: digits (tensor data, mnist-sample), class folders
(imagefolder) and localization. Each flag either works (exit 0, and what it printed or wrote is
checked for substance) or is refused in exactly one line, `cnnkit: error: ...`, exit 2; never
a traceback, and nothing but the documented exit codes leaves main().

The flags are read from the argparse parser itself: a flag added to a command without a row in
CASES fails `test_every_documented_flag_is_covered`. Only the CLI face and the fixtures of
conftest.py are used, so the test survives moves of the modules behind the commands. Each
family's run is trained once (the digit and localization runs are conftest's session runs);
the commands that write into a run (train --resume, resume) work on a copy."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnkit.cli import build_parser, main
from cnnkit.errors import CnnkitError
from tests.imagefiles import write_class_folders

FAMILIES = ("digits", "folders", "localization")
# -h/--help and --debug come with every parser (argparse, and cnnkit.cli's `common` parent):
# test_help_of_every_command and test_debug_raises_what_would_be_one_line cover them
EVERYWHERE = {"-h", "--help", "--debug"}

FOLDERS_CONFIG = {
    "model": {"input": [3, 32, 32], "layers": [
        ["Conv2d", 3, 4, 3], ["ReLU"], ["MaxPool2d", 2], ["Conv2d", 8, 3], ["ReLU"],
        ["Flatten"], ["Linear", 3]]},
    "data": {"name": "imagefolder", "image_size": 32, "workers": 0},
    "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 4, "epochs": 2},
}


@dataclass(frozen=True)
class Family:
    """A trained run of one kind of data and what the commands need beside it."""

    name: str
    config: Path      # the config file the run was trained from
    run: Path         # its run directory (read only)
    epochs: int       # epochs the run has
    spare: Path       # a run to copy for the commands that write into one ({more} epochs)
    spare_epochs: int
    image: Path       # one image of the family's kind
    images: Path      # a folder of two such images
    conv: str         # a conv layer's state_dict path that is not the first one
    shipped: str      # a shipped config of the same kind
    shrink: tuple[str, ...] = ()  # --set arguments that make one more run cheap

    def fill(self, arg: str, tmp: Path) -> str:
        return arg.format(run=self.run, best=self.run / "best.pt", config=self.config,
                          image=self.image, images=self.images, conv=self.conv,
                          shipped=self.shipped, tmp=tmp, more=self.spare_epochs + 1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The class-folder index cache in a temporary folder, never ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def families(tmp_path_factory, trained_run, trained_localization_run, cache_dir):
    """name -> Family: conftest's digit and localization runs and a class-folder run trained
    here through `cnnkit train`."""
    root = tmp_path_factory.mktemp("families")
    digits = root / "digits"
    assert main(["sample-images", str(root / "samples")]) == 0
    for name in ("digit_7.png", "digit_2.png"):
        digits.mkdir(exist_ok=True)
        shutil.copy(root / "samples" / name, digits / name)

    data = write_class_folders(root / "folders", classes=("cat", "dog", "owl"))
    config = root / "folders.yaml"
    cfg = {**FOLDERS_CONFIG, "data": {**FOLDERS_CONFIG["data"], "root": str(data)}}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["train", str(config), "--out", str(root / "folders_run"), "--quiet"]) == 0

    canvases = root / "canvases"
    canvases.mkdir()
    for i, (top, left) in enumerate([(8, 12), (4, 2)]):
        canvas = np.zeros((32, 32), dtype=np.uint8)
        canvas[top:top + 16, left:left + 8] = 255  # a bright bar where a digit would be
        Image.fromarray(canvas, mode="L").save(canvases / f"bar{i}.png")

    (digit_config, digit_run), (box_config, box_run) = trained_run, trained_localization_run
    # an epoch of the session's localization run is 2,000 canvases: the commands that train
    # one more epoch go on from a run of 200, trained here through `cnnkit train`
    box_shrink = ("data.train_size=200", "data.val_size=100")
    spare = root / "localization_spare"
    assert main(["train", str(box_config), "--out", str(spare), "--quiet", "--set",
                 "train.epochs=1", *[a for s in box_shrink for a in ("--set", s)]]) == 0
    return {
        "digits": Family("digits", digit_config, digit_run.out_dir, 2, digit_run.out_dir, 2,
                         digits / "digit_7.png", digits, "3", "mnist_conv",
                         ("data.train_size=200",)),
        "folders": Family("folders", config, root / "folders_run", 2, root / "folders_run", 2,
                          data / "val" / "owl" / "0.jpg", data / "test" / "cat", "3",
                          "resnet18"),
        "localization": Family("localization", box_config, box_run.out_dir, 5, spare, 1,
                               canvases / "bar0.png", canvases, "4", "localization_mnist",
                               box_shrink),
    }


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`cnnkit ARGV` in process -> (exit code, stdout, stderr), failing the test on anything
    but a return: an exception or SystemExit out of main() is a bug."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any of them is the finding
        pytest.fail(f"cnnkit {' '.join(argv)}: {type(exc).__name__} escaped main(): {exc}")
    return code, out.getvalue(), err.getvalue()


def refused(code: int, out: str, err: str) -> str:
    """The one line of a refusal (exit 2), its prefix cut."""
    assert code == 2, (code, out, err)
    assert err.startswith("cnnkit: error: ") and err.count("\n") == 1, err
    return err.removeprefix("cnnkit: error: ")


# --- what each case checks in what the command printed and wrote ---

def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 16, (path, image.size)
        return image.size


def _check_print_config(fam, out, tmp):
    assert yaml.safe_load(out)["train"]["epochs"] == 7


def _check_one_more_epoch(fam, out, tmp):
    rows = _rows(tmp / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, fam.spare_epochs + 2))
    assert all(float(r["val_loss"]) > 0 for r in rows)


def _check_sweep(fam, out, tmp):
    plan = json.loads((tmp / "sweep" / "sweep.json").read_text())
    assert plan, plan
    (metrics,) = sorted((tmp / "sweep").glob("*/metrics.csv"))
    assert len(_rows(metrics)) == 1 and "1 run: 1 finished" in out, out


def _check_search(fam, out, tmp):
    (trial,) = sorted((tmp / "search").glob("trial-*/metrics.csv"))
    assert len(_rows(trial)) == 1, out
    assert (tmp / "study.db").stat().st_size > 0  # the study went to --storage


def _check_best_config(fam, out, tmp):
    config = yaml.safe_load(out)
    assert config["model"] and config["train"] and "out" not in config, out
    assert out.startswith("# the best of 1 finished runs"), out


def _check_runs_json(fam, out, tmp):
    table = json.loads(out)
    (row,) = table["runs"]
    assert table["metric"] == "val_loss", table
    losses = [float(r["val_loss"]) for r in _rows(fam.run / "metrics.csv")]
    assert (row["name"], row["status"], row["epochs"]) == (fam.run.name, "finished", fam.epochs)
    assert row["best"] == pytest.approx(min(losses)), row  # --sort val_loss: its best value


def _check_runs_csv(fam, out, tmp):
    (row,) = list(csv.DictReader(out.splitlines()))
    assert (row["name"], row["epochs"]) == (fam.run.name, str(fam.epochs)), row


def _check_runs_text(fam, out, tmp):
    assert fam.run.name in out and out.count("\n") >= 1, out


def _check_runs_wrapped(fam, out, tmp):
    groups = [group.splitlines() for group in out.strip().split("\n\n")]
    assert len(groups) >= 3 and all(len(line) <= 30 for line in out.splitlines()), out
    assert all(g[0].startswith("name") and g[1].startswith(fam.run.name) for g in groups), out


def _check_plot(fam, out, tmp):
    _png(tmp / "curves.png")
    assert "wrote" in out


def _check_summary_json(fam, out, tmp):
    summary = json.loads(out)
    assert fam.conv in [layer["name"] for layer in summary["layers"]]
    assert sum(layer["params"] for layer in summary["layers"]) > 100


def _check_summary_text(fam, out, tmp):
    assert f"\n{fam.conv} " in out and "Params" in out, out


def _check_eval_text(fam, out, tmp):
    assert "accuracy" in out and "loss" in out and "examples" in out, out


def _check_eval_json_out(fam, out, tmp):
    result = json.loads(out)
    assert 0 <= result["accuracy"] <= 1 and result["n"] > 0 and result["loss"] > 0
    assert json.loads((tmp / "e" / "eval.json").read_text()) == result
    if fam.name != "localization":
        _png(tmp / "e" / "confusion.png")
        assert len(result["confusion_matrix"]) == len(result["classes"])


def _check_eval_split(fam, out, tmp):
    assert json.loads(out)["split"] == "test" and json.loads(out)["n"] > 0


def _check_eval_average(fam, out, tmp):
    result = json.loads(out)
    assert 0 <= result["accuracy"] <= 1 and len(result["members"]) >= 1, result


def _check_print_checkpoint_config(fam, out, tmp):
    assert yaml.safe_load(out)["model"]["input"], out


def _check_predict_json(fam, out, tmp):
    (result,) = json.loads(out)
    assert len(result["top"]) == 2, result
    assert 0 <= result["probability"] <= 1


def _check_predict_csv(fam, out, tmp):
    assert len(_rows(tmp / "p.csv")) == 2 and "wrote 2 predictions" in out, out


def _check_predict_text(fam, out, tmp):
    assert fam.image.name in out, out


def _check_predict_boxes(fam, out, tmp):
    (drawn,) = (tmp / "boxes").iterdir()
    assert drawn.name == f"{fam.image.stem}.png" and min(_png(drawn)) >= 32, drawn


def _check_filters(fam, out, tmp):
    _png(tmp / "f.png")


def _check_activations(fam, out, tmp):
    pngs = sorted((tmp / "acts").glob("*.png"))
    assert len(pngs) == 2, pngs  # one per conv layer
    for png in pngs:
        _png(png)


def _check_saliency(fam, out, tmp):
    _png(tmp / "s.png")


def _check_export(fam, out, tmp):
    assert (tmp / "m.pt").stat().st_size > 1000 and "MB" in out
    code, printed, err = run_cli("predict", str(tmp / "m.pt"), str(fam.image), "--json")
    assert code == 0 and json.loads(printed), err  # the slim file is read back


def _check_onnx(fam, out, tmp):
    assert (tmp / "m.onnx").stat().st_size > 1000 and "outputs within" in out, out


def _check_shipped_config(fam, out, tmp):
    assert yaml.safe_load(out)["model"], out


def _check_configs_json(fam, out, tmp):
    names = [row["name"] for row in json.loads(out)]
    assert {"mnist_conv", "resnet18", "localization_mnist"} <= set(names), names


def _check_samples(fam, out, tmp):
    pngs = sorted((tmp / "s").glob("digit_*.png"))
    assert len(pngs) == 10 and _png(pngs[0]) == (28, 28)


@dataclass(frozen=True)
class Case:
    """One command line (format fields filled by Family.fill: {run} {best} {config} {image}
    {images} {conv} {shipped} {tmp} {more}), the flags it covers, and the check of a success.
    `refusals`: family -> what the one-line error must say (exit 2 expected)."""

    id: str
    argv: tuple[str, ...]
    covers: tuple[str, ...]
    check: object
    copy_run: bool = False
    shrink: bool = False
    refusals: dict[str, str] = field(default_factory=dict)
    data_free: bool = False  # reads no run: run once, not once per family
    slow: bool = False  # marked slow (what tests/test_onnx.py checks on every kind of run)

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv[0] != "visualize" else f"visualize {self.argv[2]}"


CLASSIFICATION_ONLY = "score classification; this checkpoint's task is localization"

CASES = [
    Case("train-print-config", ("train", "{config}", "--print-config", "--set",
                                "train.epochs=7"), ("--print-config", "--set"),
         _check_print_config),
    Case("train-resume", ("train", "{tmp}/run/config.yaml", "--out", "{tmp}/run", "--resume",
                          "--quiet", "--set", "train.epochs={more}"),
         ("--out", "--resume", "--quiet"),
         _check_one_more_epoch, copy_run=True),
    Case("resume", ("resume", "{tmp}/run", "--quiet", "--set", "train.epochs={more}"),
         ("--quiet", "--set"), _check_one_more_epoch, copy_run=True),
    Case("sweep", ("sweep", "{config}", "--grid", "train.lr=[0.01]", "--seeds", "3", "--out",
                   "{tmp}/sweep", "--jobs", "1", "--threads", "1", "--yes", "--set",
                   "train.epochs=1"),
         ("--grid", "--seeds", "--out", "--jobs", "--threads", "--yes", "--set"),
         _check_sweep, shrink=True),
    Case("sweep-search", ("sweep", "{config}", "--search", "random", "--trials", "1", "--space",
                          "train.lr=loguniform(1.0e-3, 1.0e-2)", "--storage",
                          "sqlite:///{tmp}/study.db", "--study", "matrix", "--out",
                          "{tmp}/search", "--set", "train.epochs=1"),
         ("--search", "--trials", "--space", "--storage", "--study", "--out", "--set"),
         _check_search, shrink=True),
    Case("runs-best-config", ("runs", "{run}", "--best-config"), ("--best-config",),
         _check_best_config),
    Case("runs-json", ("runs", "{run}", "--sort", "val_loss", "--json"), ("--sort", "--json"),
         _check_runs_json),
    Case("runs-csv", ("runs", "{run}", "--csv"), ("--csv",), _check_runs_csv),
    Case("runs-text", ("runs", "{run}"), (), _check_runs_text),
    Case("runs-width", ("runs", "{run}", "--width", "30"), ("--width",), _check_runs_wrapped),
    Case("plot", ("plot", "{run}", "{run}", "--out", "{tmp}/curves.png", "--metric", "val_loss",
                  "--no-bands"), ("--out", "--metric", "--no-bands"), _check_plot),
    Case("plot-unknown-metric", ("plot", "{run}", "--metric", "val_nope", "--out",
                                 "{tmp}/curves.png"), ("--metric",), None,
         refusals=dict.fromkeys(FAMILIES, "--metric val_nope: not in the metrics")),
    Case("summary-config", ("summary", "{config}", "--json", "--set", "train.lr=0.5"),
         ("--json", "--set"), _check_summary_json),
    Case("summary-run", ("summary", "{run}"), (), _check_summary_text),
    Case("eval", ("eval", "{best}"), (), _check_eval_text),
    Case("eval-json-out", ("eval", "{run}", "--json", "--out", "{tmp}/e", "--split", "val",
                           "--set", "train.batch_size=7"), ("--json", "--out", "--split", "--set"),
         _check_eval_json_out),
    Case("eval-test-split", ("eval", "{best}", "--split", "test", "--json"), ("--split",),
         _check_eval_split, refusals=dict.fromkeys(("digits", "localization"),
                                 "split 'test': this dataset has train, val")),
    Case("eval-tta", ("eval", "{best}", "--tta", "--json"), ("--tta",), _check_eval_average,
         refusals={"localization": CLASSIFICATION_ONLY}),
    Case("eval-average", ("eval", "{best}", "{run}", "--json"), (), _check_eval_average,
         refusals={"localization": CLASSIFICATION_ONLY}),
    Case("eval-print-config", ("eval", "{best}", "--print-config"), ("--print-config",),
         _check_print_checkpoint_config),
    Case("predict-json", ("predict", "{run}", "{image}", "--top", "2", "--json", "--device",
                          "cpu"), ("--top", "--json", "--device"), _check_predict_json),
    Case("predict-csv", ("predict", "{best}", "{images}", "--csv", "{tmp}/p.csv"), ("--csv",),
         _check_predict_csv),
    Case("predict-skip-bad", ("predict", "{best}", "{images}", "--skip-bad", "--csv",
                              "{tmp}/p.csv"), ("--skip-bad",), _check_predict_csv),
    Case("predict-invert", ("predict", "{best}", "{image}", "--invert"), ("--invert",),
         _check_predict_text),
    Case("predict-boxes", ("predict", "{best}", "{image}", "--out", "{tmp}/boxes"), ("--out",),
         _check_predict_boxes,
         refusals={"digits": "--out: draws boxes of localization checkpoints",
                   "folders": "--out: draws boxes of localization checkpoints"}),
    Case("filters", ("visualize", "{best}", "filters", "--layer", "{conv}", "--out",
                     "{tmp}/f.png"), ("--layer", "--out"), _check_filters),
    Case("activations", ("visualize", "{run}", "activations", "--image", "{image}", "--out",
                         "{tmp}/acts"), ("--image", "--out"), _check_activations),
    Case("saliency", ("visualize", "{best}", "saliency", "--image", "{image}", "--out",
                      "{tmp}/s.png"), ("--image", "--out"), _check_saliency),
    Case("export", ("export", "{run}", "--out", "{tmp}/m.pt"), ("--out",), _check_export),
    Case("export-onnx", ("export", "{best}", "--out", "{tmp}/m.pt", "--onnx", "{tmp}/m.onnx"),
         ("--out", "--onnx"), _check_onnx, slow=True),
    Case("config", ("config", "{shipped}"), (), _check_shipped_config),
    Case("configs-json", ("configs", "--json"), ("--json",), _check_configs_json,
         data_free=True),
    Case("sample-images", ("sample-images", "{tmp}/s"), (), _check_samples, data_free=True),
]


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        if case.data_free:
            yield pytest.param(case, "digits", id=case.id, marks=marks)
            continue
        for name in FAMILIES:
            yield pytest.param(case, name, id=f"{case.id}-{name}", marks=marks)


@pytest.mark.parametrize(("case", "family"), list(_params()))
def test_command_on_each_kind_of_data(case, family, families, tmp_path):
    fam = families[family]
    if case.copy_run:
        shutil.copytree(fam.spare, tmp_path / "run")
    argv = [fam.fill(arg, tmp_path) for arg in case.argv]
    if case.shrink:
        argv += [a for s in fam.shrink for a in ("--set", s)]
    code, out, err = run_cli(*argv)
    assert "Traceback" not in out + err, err
    if family in case.refusals:
        assert case.refusals[family] in refused(code, out, err)
        return
    assert code == 0, (argv, err)
    case.check(fam, out, tmp_path)


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(command path, its parser) for every subcommand, `visualize filters` and such too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                yield path, sub
                yield from _commands(sub, path)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings} - EVERYWHERE


def test_every_documented_flag_is_covered():
    documented = {(path, flag) for path, sub in _commands(build_parser())
                  for flag in _flags(sub)}
    covered = {(case.command, flag) for case in CASES for flag in case.covers}
    assert documented - covered == set(), "flags without a row in CASES"
    assert covered - documented == set(), "rows in CASES for flags no parser has"
    runnable = {path for path, sub in _commands(build_parser())
                if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)}
    assert runnable == {case.command for case in CASES}, "a command without a case"


@pytest.mark.parametrize("path", [path for path, _ in _commands(build_parser())])
def test_help_of_every_command(path):
    """Each parser's --help, every flag of it named; `visualize PICTURE` after a CHECKPOINT."""
    parser = dict(_commands(build_parser()))[path]
    words = path.replace("visualize ", "visualize best.pt ").split()
    code, out, err = run_cli(*words, "--help")
    usage = f"usage: cnnkit {path.replace('visualize ', 'visualize CHECKPOINT ')}"
    assert code == 0 and out.startswith(usage) and not err, out
    assert all(flag in out for flag in _flags(parser)), out


def test_version_and_a_usage_error():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("cnnkit ") and out.count("\n") == 1
    code, _, err = run_cli("eval", "--split", "nope", "x.pt")
    assert code == 2 and "argument --split: invalid choice" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [("--debug", "eval", "{tmp}/missing.pt"),
                                  ("eval", "{tmp}/missing.pt", "--debug"),
                                  ("visualize", "{tmp}/missing.pt", "filters", "--debug")])
def test_debug_raises_what_would_be_one_line(argv, tmp_path):
    """--debug, before or after the command: the error is raised (its traceback shown)
    instead of the one line, which without it is what the same command prints."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(CnnkitError, match="missing.pt"):
        main(argv)
    line = refused(*run_cli(*[a for a in argv if a != "--debug"]))
    assert "missing.pt" in line
