"""`cnnkit plot`."""

from __future__ import annotations

import argparse

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit plot runs/mnist_dense runs/mnist_conv --out runs/model1_vs_model2.png
  cnnkit plot runs/a runs/b --metric val_loss --out loss.png"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import display
    from cnnkit.experiments.plot import compare_runs

    compare_runs(args.run_dirs, args.out, metric=args.metric, bands=not args.no_bands)
    print(display(f"wrote {args.out}"))
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plot", parents=[common], help="overlay the curves of several runs",
        description="Overlay one metric of several runs, epoch by epoch, in one PNG (read "
                    "from each RUN_DIR/metrics.csv). A folder stands for the runs under it (a "
                    "sweep); runs that differ only by train.seed are one line, their mean, with "
                    "a band of ± one sd. Runs that share a folder name are labelled by the "
                    "shortest distinct tail of their paths.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories, each holding a metrics.csv, or folders of runs")
    p.add_argument("--out", default="comparison.png", metavar="FILE",
                   help="the PNG to write (default: comparison.png)")
    p.add_argument("--metric", default="val_acc", metavar="COLUMN",
                   help="the metrics.csv column to plot (default: val_acc). Classification: "
                        "{train,val}_{loss,acc,balanced_acc,macro_f1}; localization: "
                        "{train,val}_{loss,acc,obj_acc,cls_acc,iou}; with an EMA also raw_val_*; "
                        "and lr, seconds")
    p.add_argument("--no-bands", action="store_true",
                   help="one line per run, seeds too (default: seeds as one line with a band)")
    return p
