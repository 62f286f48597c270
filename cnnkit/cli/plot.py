"""`cnnkit plot`."""

from __future__ import annotations

import argparse

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit plot runs/mnist_dense runs/mnist_conv --out runs/model1_vs_model2.png
  cnnkit plot runs/a runs/b --metric val_loss --out loss.png
  cnnkit plot runs/tpe_search --out by_key.png   # a search: the metric against each key"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import display
    from cnnkit.experiments.plot import compare_runs
    from cnnkit.experiments.search_plot import is_search, plot_search

    if len(args.run_dirs) == 1 and is_search(args.run_dirs[0]):  # the metric by searched key
        drawn = plot_search(args.run_dirs[0], args.out, metric=args.metric)
        print(display(f"wrote {args.out}: {drawn} trials"))
        return 0
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
                    "shortest distinct tail of their paths. A search folder (cnnkit sweep "
                    "--search) is drawn as each trial's best value against each searched key.",
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
