"""`cnnkit plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.errors import CnnkitError

EPILOG = """examples:
  cnnkit plot runs/mnist_dense runs/mnist_conv --out runs/model1_vs_model2.png
  cnnkit plot runs/a runs/b --metric val_loss --out loss.png"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.training.curves import plot_runs, read_metrics

    runs = {Path(d).name: read_metrics(d) for d in args.run_dirs}
    missing = [name for name, rows in runs.items() if args.metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {args.metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(next(iter(runs.values()))[0])})")
    plot_runs(runs, args.out, metric=args.metric)
    print(f"wrote {args.out}")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plot", parents=[common], help="overlay the curves of several runs",
        description="Overlay one metric of several runs, epoch by epoch, in one PNG (read "
                    "from each RUN_DIR/metrics.csv).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories, each holding a metrics.csv")
    p.add_argument("--out", default="comparison.png", metavar="FILE",
                   help="the PNG to write (default: comparison.png)")
    p.add_argument("--metric", default="val_acc", metavar="COLUMN",
                   help="the metrics.csv column to plot (default: val_acc). Classification: "
                        "{train,val}_{loss,acc,balanced_acc,macro_f1}; localization: "
                        "{train,val}_{loss,acc,obj_acc,cls_acc,iou}; with an EMA also raw_val_*; "
                        "and lr, seconds")
    return p
