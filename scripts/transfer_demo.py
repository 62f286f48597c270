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

Steps 2 and 3 are two sweeps (cnnkit.experiments.sweep), so the script is these commands plus
the table; run it again after a crash or Ctrl-C and it resumes where it stopped:

    cnnkit train configs/transfer_pretrain.yaml --out runs/transfer_demo/pretrain
    cnnkit sweep configs/transfer_digits.yaml --grid 'data.train_per_class=[5, 20]' \\
        --seeds 0 1 2 --set model.weights=runs/transfer_demo/pretrain/best.pt \\
        --out runs/transfer_demo/transfer
    cnnkit sweep configs/transfer_digits.yaml --grid 'data.train_per_class=[5, 20]' \\
        --seeds 0 1 2 --set model.weights=null --set 'train.freeze=[]' \\
        --out runs/transfer_demo/scratch
    cnnkit runs runs/transfer_demo/transfer runs/transfer_demo/scratch

`--set KEY.PATH=VALUE` overrides every run (pretraining, transfer and scratch), after the
script's own settings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from cnnkit.experiments.sweep import plan_sweep, run_sweep
from cnnkit.rundir.records import read_run
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
    parser.add_argument("--threads", type=int,
                        help="torch threads per run (default: all the cores)")
    args = parser.parse_args(argv)
    out, sets = Path(args.out), list(args.set)

    pretrained = _pretrain(out / "pretrain", sets)
    print(f"pretrained on digits 0-4: val acc {pretrained:.4f}", flush=True)
    grid = [f"data.train_per_class={args.per_class}"]
    results: dict[tuple[int, str], list[float]] = {}
    for name, extra in RUNS.items():
        weights = [] if extra else [f"model.weights={out / 'pretrain' / 'best.pt'}"]
        plan = plan_sweep(CONFIGS / "transfer_digits.yaml", grids=grid,
                          seeds=list(range(args.seeds)), sets=[*weights, *extra, *sets])
        records = run_sweep(plan, out / name, threads=args.threads)
        for record in records:
            if record.status != "finished":
                print(f"{record.path}: {record.status_text}", file=sys.stderr)
                return 1
            n = record.config["data"]["train_per_class"]
            results.setdefault((n, name), []).append(record.history[-1]["val_acc"])
    print(_table(results, args.per_class, args.seeds))
    return 0


def _pretrain(run_dir: Path, sets: list[str]) -> float:
    """Step 1, or what an earlier run of the script left of it: the final val_acc."""
    record = read_run(run_dir)
    if record.status != "finished":
        train(CONFIGS / "transfer_pretrain.yaml", out_dir=run_dir, quiet=True,
              resume=(run_dir / "last.pt").exists(), overrides=tuple(sets))
        record = read_run(run_dir)
    return record.history[-1]["val_acc"]


def _table(results: dict[tuple[int, str], list[float]], per_class: list[int], seeds: int) -> str:
    lines = [f"digits 5-9 of the validation split: final val acc, mean ± sd (min-max) of "
             f"{seeds} seeds",
             "labelled per class  transfer (frozen convs, new head)          from scratch"]
    for n in per_class:
        cells = [_cell(results[n, name]) for name in RUNS]
        lines.append(f"{n:>18}  {cells[0]:>33}  {cells[1]:>19}")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    sys.exit(main())
