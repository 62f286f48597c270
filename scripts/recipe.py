"""Cross-validate candidate recipes as `cnnkit sweep`s: accuracy fold by fold, against the first.

    python scripts/recipe.py                          # configs/mnist_best.yaml, seeds 0 1 2, all
    python scripts/recipe.py --folds 5 --fold 0 1 2 --out runs/cv        # a screen on folds 0-2
    python scripts/recipe.py --config configs/mnist_best.yaml configs/mnist_resnet.yaml \\
        --variants recipe elastic12 --folds 5 --fold 3 4 --out runs/cv   # a confirmation
    python scripts/recipe.py --folds 5 --seeds 0 1 2 --tta --out runs/cv  # + seeds averaged, TTA
    python scripts/recipe.py --variants recipe --seeds 0 --set train.epochs=1 \\
        --set data.train_size=50 --set data.val_size=20       # a smoke run: seconds

A candidate is a config (--config, several allowed) with a variant applied: `no-X` removes
one ingredient of the recipe, one without the prefix adds one, `a+b` applies both. Each
candidate is one sweep, DIR/NAME, the same as

    cnnkit sweep CONFIG --set data.folds=K --grid 'data.fold=[0, 1, 2]' --seeds 0 1 2 \\
        --set VARIANT_SETTING ... --jobs 1 --threads T --out DIR/NAME

(a variant that edits the layer list sweeps DIR/NAME.yaml, the edited config). So running the
script again resumes: finished runs are read back, not retrained. With --folds K, fold i of K
validates (stratified; every digit of the sample validates once over the K folds); without,
the config's own split. The accuracy is the last epoch's val_acc (the EMA weights where the
candidate keeps them): no epoch is picked on the validation fold. With several seeds a row
adds their probabilities averaged per fold (`cnnkit eval A B C`), with --tta each under
test-time augmentation too. Every row after the first candidate's is compared fold by fold
with the first candidate's single runs: the gain per fold, and its mean ± sd. Time per run:
the wall clock of training (each run's metrics.csv) and the CPU time of the runs trained by
this command (this process and its children), which a busy machine inflates less.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnkit.config import apply_override  # noqa: E402
from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.experiments.sweep import plan_sweep, run_sweep  # noqa: E402
from cnnkit.infer.ensemble import evaluate_average  # noqa: E402
from cnnkit.rundir import LAST  # noqa: E402
from cnnkit.rundir.records import read_run  # noqa: E402
from cnnkit.schema import TrainConfig  # noqa: E402


def _swap_layer(name: str, replacement: list) -> Callable[[dict], None]:
    """Replace every `name` layer of a flat layer list in place, keeping the indices."""

    def edit(raw: dict) -> None:
        layers = raw["model"]["layers"]
        for i, layer in enumerate(layers):
            if layer[0] == name:
                layers[i] = list(replacement)
            if name == "BatchNorm2d" and layer[0] == "Conv2d" and isinstance(layer[-1], dict):
                layer[-1].pop("bias", None)  # without BatchNorm the convolutions need a bias
    return edit


def _widen(raw: dict) -> None:
    """A 128-channel 3×3 conv (BatchNorm, ReLU) after the last pooling of a flat list; a
    residual block after it (whose in channels are explicit) then takes 128 channels in."""
    layers = raw["model"]["layers"]
    at = max(i for i, layer in enumerate(layers) if layer[0] == "MaxPool2d") + 1
    layers[at:at] = [["Conv2d", 128, 3, {"padding": 1, "bias": False}], ["BatchNorm2d"],
                     ["ReLU"]]
    block = next((layer for layer in layers[at + 3:] if layer[0] in _IN_OUT), None)
    if block is not None:
        block[1] = 128


_IN_OUT = ("BasicBlock",)  # layers written [Name, in channels, out channels, ...]


def _scale_channels(factor: float) -> Callable[[dict], None]:
    """Every conv's and residual block's channels × factor (rounded down), the rest kept."""

    def edit(raw: dict) -> None:
        for layer in raw["model"]["layers"]:
            width = (1, 2) if layer[0] in _IN_OUT else (1,) if layer[0] == "Conv2d" else ()
            for i in width:
                layer[i] = int(layer[i] * factor)
    return edit


def _half_batch(raw: dict) -> list[str]:
    """Half the batch, so twice the optimizer steps per epoch (same lr, same epochs)."""
    batch = raw.get("train", {}).get("batch_size", TrainConfig.batch_size)
    return [f"train.batch_size={batch // 2}"]


def _double_epochs(raw: dict) -> list[str]:
    return [f"train.epochs={2 * raw.get('train', {}).get('epochs', TrainConfig.epochs)}"]


# name -> (what the row says, the --set items it adds, or a function of the config giving
# them, and an edit of the layer list that --set cannot say)
VARIANTS: dict[str, tuple[str, list[str] | Callable[[dict], list[str]],
                          Callable[[dict], None] | None]] = {
    "recipe": ("the recipe", [], None),
    "no-augment": ("− augmentation", ["data.augment={}"], None),
    "no-batchnorm": ("− BatchNorm", [], _swap_layer("BatchNorm2d", ["Identity"])),
    "no-schedule": ("− one-cycle (constant lr)", ["train.schedule={}"], None),
    "no-smoothing": ("− label smoothing", ["train.label_smoothing=0.0"], None),
    "no-weight-decay": ("− weight decay", ["train.weight_decay=0.0"], None),
    "no-dropout": ("− dropout", [], _swap_layer("Dropout", ["Identity"])),
    "no-ema": ("− EMA", ["train.ema_decay=0.0"], None),
    "elastic": ("+ elastic distortion (34, σ 4)", ["data.augment.elastic=34.0"], None),
    "elastic12": ("+ milder elastic distortion (12, σ 4)", ["data.augment.elastic=12"], None),
    "long": ("+ twice the epochs", _double_epochs, None),
    "wide": ("+ a third conv layer, 128 channels", [], _widen),
    "wider": ("+ 9/8 the channels (32, 64 -> 36, 72)", [], _scale_channels(9 / 8)),
    "half-batch": ("+ half the batch (twice the steps per epoch)", _half_batch, None),
}


def variant(name: str, raw: dict) -> tuple[str, list[str], Callable[[dict], None] | None]:
    """(label, --set items, layer edit or None) of a variant name; `a+b`: a's, then b's."""
    parts = [VARIANTS[part] for part in name.split("+")]
    sets = [item for _, s, _ in parts for item in (s(raw) if callable(s) else s)]
    edits = [edit for *_, edit in parts if edit is not None]

    def edit_all(layers_raw: dict) -> None:
        for one in edits:
            one(layers_raw)
    return ", ".join(label for label, *_ in parts), sets, edit_all if edits else None


def variant_name(text: str) -> str:
    unknown = [part for part in text.split("+") if part not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0]!r} (valid: "
                                         f"{', '.join(VARIANTS)}, joined by +)")
    return text


def run_candidate(config: Path, name: str, args: argparse.Namespace, out: Path) -> dict:
    """One candidate's sweep (run, or read back where finished): accuracies per fold."""
    raw = yaml.safe_load(config.read_text())
    for item in args.set:
        apply_override(raw, item, source=str(config))
    label, sets, edit = variant(name, raw)
    label, folder = f"{config.stem}: {label}", out / _slug(config, name)
    if edit is not None:  # the edited layer list as a config file of its own
        edit(raw)
        config = folder.with_suffix(".yaml")
        out.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
    folds = ([f"data.folds={args.folds}"] if args.folds else [])
    grids = [f"data.fold={args.fold}"] if args.folds else []
    plan = plan_sweep(config, grids=grids, seeds=args.seeds,
                      sets=[*folds, *args.set, *sets])
    trained = sum(read_run(folder / m.name).status != "finished" for m in plan.members)
    cpu = _cpu_seconds()
    records = run_sweep(plan, folder, threads=args.threads)
    cpu = _cpu_seconds() - cpu
    unfinished = [r for r in records if r.status != "finished"]
    if unfinished:
        raise SystemExit(f"recipe.py: error: {unfinished[0].path}: {unfinished[0].status_text} "
                         f"({len(unfinished)} of {len(records)} runs did not finish)")
    units = args.fold if args.folds else [None]
    by_unit = {u: [r for r in records if u is None or r.values.get("data.fold") == u]
               for u in units}
    return {"label": label, "units": units, "by_unit": by_unit,
            "cpu": cpu / trained if trained else None,
            "wall": statistics.mean(r.seconds for r in records)}


def _slug(config: Path, name: str) -> str:
    return config.stem if name == "recipe" else f"{config.stem}+{name}"


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def rows_of(result: dict, *, tta: bool) -> list[tuple[str, list[float]]]:
    """(row label, accuracy % per fold) rows of one candidate: one run (the seeds' mean
    where several), the seeds averaged, and each with TTA."""
    seeds = len(next(iter(result["by_unit"].values())))
    pieces = [("one run", False, False)] + ([("one run, --tta", False, True)] if tta else [])
    if seeds > 1:
        pieces += [(f"{seeds} seeds averaged", True, False)]
        pieces += [(f"{seeds} seeds averaged, --tta", True, True)] if tta else []
    rows = []
    for what, ensemble, with_tta in pieces:
        values = []
        for records in result["by_unit"].values():
            last = [r.path / LAST for r in records]
            if ensemble:
                values.append(evaluate_average(last, tta=with_tta)["accuracy"] * 100)
            elif with_tta:
                values.append(statistics.mean(
                    evaluate_average([p], tta=True)["accuracy"] * 100 for p in last))
            else:
                values.append(statistics.mean(r.history[-1]["val_acc"] * 100 for r in records))
        rows.append((f"{result['label']}, {what}", values))
    return rows


def table(results: list[dict], *, tta: bool, over: str) -> str:
    """Markdown: a row per candidate and way of scoring, the gain fold by fold against the
    first candidate's single runs."""
    base = rows_of(results[0], tta=False)[0][1]
    lines = [f"| candidate | % per {over} | mean ± sd, % | gain per {over} vs the first | "
             "gain, mean ± sd | CPU s per run | wall s per run |", "|---|---|---|---|---|---|---|"]
    for result in results:
        cpu = "—" if result["cpu"] is None else f"{result['cpu']:.0f}"
        for label, values in rows_of(result, tta=tta):
            gains = [v - b for v, b in zip(values, base)]
            lines.append(f"| {label} | {_list(values)} | {_mean_sd(values)} | {_list(gains, '+')} "
                         f"| {_mean_sd(gains, '+')} | {cpu} | {result['wall']:.0f} |")
    return "\n".join(lines)


def _list(values: list[float], sign: str = "") -> str:
    return ", ".join(f"{v:{sign}.2f}" for v in values)


def _mean_sd(values: list[float], sign: str = "") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "configs" / "mnist_best.yaml")],
                        help="one or more configs; the first one's first variant is the "
                             "baseline every row is compared with")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train.seed values (default: 0 1 2 on the config's split; 0 with "
                             "--folds, where the folds give the spread)")
    parser.add_argument("--variants", nargs="+", type=variant_name,
                        default=[name for name in VARIANTS if name.startswith(("recipe", "no-"))],
                        help=f"{', '.join(VARIANTS)}, or several joined by + (default: the "
                             f"recipe and its ablations)")
    parser.add_argument("--tta", action="store_true",
                        help="also score the runs (and the seeds averaged) with test-time "
                             "augmentation")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="K-fold cross-validation over the whole sample (data.folds)")
    parser.add_argument("--fold", type=int, nargs="+", default=None, metavar="I",
                        help="which folds validate, one sweep member each (default: all K)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="keep the sweeps in DIR/NAME, and resume them on a second run "
                             "(default: a scratch folder, removed at the end)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override every candidate, e.g. train.epochs=15")
    args = parser.parse_args(argv)
    if args.folds is not None and args.folds < 2:
        parser.error(f"--folds: expected 2 or more, found {args.folds}")
    if args.fold is not None and args.folds is None:
        parser.error("--fold needs --folds K")
    args.fold = args.fold if args.fold is not None else list(range(args.folds or 0))
    args.seeds = args.seeds or ([0] if args.folds else [0, 1, 2])
    if args.folds and not all(0 <= i < args.folds for i in args.fold):
        parser.error(f"--fold: expected folds 0 to {args.folds - 1}, found {args.fold}")
    over = "fold" if args.folds else "seed"
    split = f"folds {args.fold} of {args.folds}" if args.folds else "the config's split"
    print(f"# {', '.join(args.config)}: {split}, seeds {args.seeds}, torch {torch.__version__}, "
          f"{args.threads or 'default'} threads, {os.cpu_count()} cores; load before: "
          f"{_load()}", flush=True)
    try:  # e.g. a sweep folder in use by another command: one line, as cnnkit says it
        with tempfile.TemporaryDirectory(prefix="cnnkit-recipe-") as scratch:
            out = Path(args.out or scratch)
            results = [run_candidate(Path(config), name, args, out)
                       for config in args.config for name in args.variants]
            if not args.folds:  # the config's split: the seeds are the rows' units
                for result in results:
                    records = result["by_unit"][None]
                    result["by_unit"] = {r.values.get("train.seed"): [r] for r in records}
            print(f"\n# load after: {_load()}\n")
            print(table(results, tta=args.tta, over=over))
    except CnnkitError as exc:
        print(f"recipe.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
