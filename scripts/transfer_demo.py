"""Transfer learning on real digits, offline: does a conv net pretrained on MNIST digits 0-4
help on digits 5-9 when only a few labelled examples per class are given?

1. configs/transfer_pretrain.yaml: the course's conv net on digits 0-4 (about 2,000 digits).
2. configs/transfer_digits.yaml: its conv layers, frozen, with a fresh dense head trained on
   N digits 5-9 per class (20 in the config).
3. The same config from scratch: no weights, nothing frozen, same data, steps and optimizer.

Both are scored on the same 500 validation digits 5-9, for each N and several seeds (the seed
draws the fresh weights and the batch order; the labelled subset stays the same).

    python scripts/transfer_demo.py [--out runs/transfer_demo] [--per-class 5 20] [--seeds 3]
    python scripts/transfer_demo.py --out /tmp/td --per-class 5 --seeds 1 \\
        --set train.epochs=1 --set data.train_size=100 --set data.val_size=50   # a smoke run

`--set KEY.PATH=VALUE` overrides every run (pretraining, transfer and scratch), after the
script's own settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnkit.training.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = {"transfer": (), "scratch": ("model.weights=null", "train.freeze=[]")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/transfer_demo", help="folder for the runs")
    parser.add_argument("--per-class", type=int, nargs="+", default=[5, 20],
                        help="labelled training digits per class (default: 5 20)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per setting (default: 3)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override every run, e.g. train.epochs=2 (repeatable)")
    args = parser.parse_args(argv)
    out, sets = Path(args.out), tuple(args.set)

    pretrain = train(CONFIGS / "transfer_pretrain.yaml", out_dir=out / "pretrain", quiet=True,
                     overrides=sets)
    print(f"pretrained on digits 0-4: val acc {pretrain.history[-1]['val_acc']:.4f}", flush=True)
    weights = out / "pretrain" / "best.pt"
    results: dict[tuple[int, str], list[float]] = {}
    for n in args.per_class:
        for name, extra in RUNS.items():
            for seed in range(args.seeds):
                overrides = (f"model.weights={weights}", f"data.train_per_class={n}",
                             f"train.seed={seed}", *extra, *sets)
                run = train(CONFIGS / "transfer_digits.yaml", out_dir=out / f"{name}_{n}_{seed}",
                            quiet=True, overrides=overrides)
                results.setdefault((n, name), []).append(run.history[-1]["val_acc"])
    print(_table(results, args.per_class, args.seeds))
    return 0


def _table(results: dict[tuple[int, str], list[float]], per_class: list[int], seeds: int) -> str:
    lines = [f"digits 5-9 of the validation split: final val acc, mean (min-max) of {seeds} seeds",
             "labelled per class  transfer (frozen convs, new head)  from scratch"]
    for n in per_class:
        cells = [_cell(results[n, name]) for name in RUNS]
        lines.append(f"{n:>18}  {cells[0]:>33}  {cells[1]:>12}")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    sys.exit(main())
