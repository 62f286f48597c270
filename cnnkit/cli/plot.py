"""`cnnkit plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.errors import CnnkitError


def run(args: argparse.Namespace) -> int:
    from cnnkit.training.curves import plot_runs, read_metrics

    runs = {Path(d).name: read_metrics(d) for d in args.run_dirs}
    missing = [name for name, rows in runs.items() if args.metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {args.metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(next(iter(runs.values()))[0])})")
    from cnnkit.training.log import display

    plot_runs(runs, args.out, metric=args.metric)
    print(display(f"wrote {args.out}"))
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", parents=[common], help="overlay the curves of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison.png")
    p.add_argument("--metric", default="val_acc")
    return p
