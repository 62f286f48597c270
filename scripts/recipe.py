"""Measure a recipe over seeds or cross-validation folds, and what each ingredient adds.

    python scripts/recipe.py                          # configs/mnist_best.yaml, seeds 0 1 2, all
    python scripts/recipe.py --variants recipe --folds 5        # 5-fold CV: mean ± sd
    python scripts/recipe.py --variants recipe elastic elastic+long --folds 3
    python scripts/recipe.py --variants recipe --folds 5 --tta  # also each run with --tta
    python scripts/recipe.py --variants recipe no-ema no-augment --threads 2
    python scripts/recipe.py --variants recipe --seeds 0 --set train.epochs=1 \\
        --set data.train_size=50 --set data.val_size=20       # a smoke run: seconds

A variant `no-X` is the recipe with one ingredient removed, one without the prefix adds one;
`a+b` applies both. Each run is `cnnkit train` in this process (quiet, in a scratch
directory). With `--folds K` each variant runs once per fold (`data.folds: K`, `data.fold: i`:
every digit of the sample validates exactly once, stratified) at the first seed; otherwise
once per seed on the config's split. The accuracy is the last epoch's val_acc (the EMA
weights where the variant keeps them): no epoch is picked on the validation set. Time is the
wall clock of `train()` (data, model, every epoch, evaluation and checkpoints), and the CPU
time of the process, which a busy machine inflates less. Prints a Markdown table for the
README, with the machine's load before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
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

from cnnkit.config import apply_override, config_from_dict  # noqa: E402
from cnnkit.infer.ensemble import evaluate_average  # noqa: E402
from cnnkit.training.trainer import train  # noqa: E402


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


def _set(item: str) -> Callable[[dict], None]:
    """The edit `--set item` makes: `_set("train.weight_decay=0.0")`."""
    return lambda raw: apply_override(raw, item)


# name -> (what the row says, the edit that removes one ingredient)
VARIANTS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "recipe": ("the recipe", lambda raw: None),
    "no-augment": ("− augmentation", _set("data.augment={}")),
    "no-batchnorm": ("− BatchNorm", _swap_layer("BatchNorm2d", ["Identity"])),
    "no-schedule": ("− one-cycle (constant lr)", _set("train.schedule={}")),
    "no-smoothing": ("− label smoothing", _set("train.label_smoothing=0.0")),
    "no-weight-decay": ("− weight decay", _set("train.weight_decay=0.0")),
    "no-dropout": ("− dropout", _swap_layer("Dropout", ["Identity"])),
    "no-ema": ("− EMA", _set("train.ema_decay=0.0")),
    "elastic": ("+ elastic distortion (34, σ 4)", _set("data.augment.elastic=34.0")),
    "long": ("+ twice the epochs", lambda raw: apply_override(
        raw, f"train.epochs={2 * raw.get('train', {}).get('epochs', 10)}")),
    "wide": ("+ a third conv layer, 128 channels", lambda raw: _widen(raw)),
}


def _widen(raw: dict) -> None:
    """A 128-channel 3×3 conv (BatchNorm, ReLU) after the last pooling of a flat list."""
    layers = raw["model"]["layers"]
    at = max(i for i, layer in enumerate(layers) if layer[0] == "MaxPool2d") + 1
    layers[at:at] = [["Conv2d", 128, 3, {"padding": 1, "bias": False}], ["BatchNorm2d"],
                     ["ReLU"]]


def variant(name: str) -> tuple[str, Callable[[dict], None]]:
    """(label, edit) of a variant name; `a+b` is a's edit, then b's."""
    parts = [VARIANTS[part] for part in name.split("+")]

    def edit(raw: dict) -> None:
        for _, one in parts:
            one(raw)
    return ", ".join(label for label, _ in parts), edit


def variant_name(text: str) -> str:
    unknown = [part for part in text.split("+") if part not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0]!r} (valid: "
                                         f"{', '.join(VARIANTS)}, joined by +)")
    return text


def run_once(raw: dict, *, source: str, seed: int, out: Path,
             fold: tuple[int, int] | None = None, tta: bool = False) -> dict:
    """One training run; `fold` (i, K): fold i of K validates, the sizes go null; `tta`: its
    last.pt also scored with test-time augmentation (`cnnkit eval --tta`)."""
    raw = copy.deepcopy(raw)
    apply_override(raw, f"train.seed={seed}")
    if fold is not None:
        for item in ("data.train_size=null", "data.val_size=null", f"data.folds={fold[1]}",
                     f"data.fold={fold[0]}"):
            apply_override(raw, item)
    cfg = config_from_dict(raw, source=source)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(cfg, out_dir=out, quiet=True)
    last = result.history[-1]
    run = {"acc": last["val_acc"], "epochs": last["epoch"],
           "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if tta:
        run["tta_acc"] = evaluate_average([out / "last.pt"], split="val", tta=True)["accuracy"]
    return run


def summarize(runs: list[dict]) -> dict:
    accs = [r["acc"] * 100 for r in runs]
    summary = {"mean": statistics.mean(accs), "std": _std(accs), "min": min(accs),
               "max": max(accs), "wall_s": statistics.mean(r["wall_s"] for r in runs),
               "cpu_s": statistics.mean(r["cpu_s"] for r in runs)}
    if "tta_acc" in runs[0]:
        tta = [r["tta_acc"] * 100 for r in runs]
        summary["tta"] = f"{statistics.mean(tta):.2f} ± {_std(tta):.2f}"
    return summary


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[tuple[str, dict]], over: str) -> str:
    tta = "tta" in rows[0][1]
    lines = [f"| variant | val accuracy, % (mean ± std over {over}) "
             f"| min – max |{' with --tta, % |' if tta else ''} wall s per run | CPU s per run |",
             "|---|---|---|---|---|" + ("---|" if tta else "")]
    for label, s in rows:
        lines.append(f"| {label} | {s['mean']:.2f} ± {s['std']:.2f} | {s['min']:.2f} – "
                     f"{s['max']:.2f} |{' ' + s['tta'] + ' |' if tta else ''} "
                     f"{s['wall_s']:.0f} | {s['cpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist_best.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", type=variant_name,
                        default=[name for name in VARIANTS if name.startswith(("recipe", "no-"))],
                        help=f"{', '.join(VARIANTS)}, or several joined by + (default: the "
                             f"recipe and its ablations)")
    parser.add_argument("--tta", action="store_true",
                        help="also score each run's last.pt with test-time augmentation")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="K-fold cross-validation over the whole sample, at the first seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override the recipe for every variant, e.g. train.epochs=15")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = yaml.safe_load(Path(args.config).read_text())
    for item in args.set:
        apply_override(raw, item, source=args.config)
    if args.folds is not None and args.folds < 2:
        parser.error(f"--folds: expected 2 or more, found {args.folds}")
    runs_over = ([(args.seeds[0], (i, args.folds)) for i in range(args.folds)] if args.folds
                 else [(seed, None) for seed in args.seeds])
    over = (f"{args.folds} folds, seed {args.seeds[0]}" if args.folds
            else f"seeds {', '.join(map(str, args.seeds))}")
    print(f"# {args.config}, {over}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"load before: {_load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-recipe-") as scratch:
        for name in args.variants:
            label, edit = variant(name)
            raw_variant = copy.deepcopy(raw)
            edit(raw_variant)
            runs = []
            for seed, fold in runs_over:
                where = f"fold {fold[0]}/{fold[1]}" if fold else f"seed {seed}"
                run = run_once(raw_variant, source=args.config, seed=seed, fold=fold,
                               out=Path(scratch) / name / where.replace("/", "of"), tta=args.tta)
                tta = f" (--tta {run['tta_acc']:.4f})" if args.tta else ""
                print(f"{name} {where}: val_acc {run['acc']:.4f}{tta} after {run['epochs']} "
                      f"epochs, {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                      f"load {_load()}", flush=True)
                runs.append(run)
            rows.append((label, summarize(runs)))
            print(table(rows[-1:], over).splitlines()[-1], flush=True)
    print(f"\n# load after: {_load()}\n")
    print(table(rows, over))
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
