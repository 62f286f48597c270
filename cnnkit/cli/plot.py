"""`cnnkit plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.errors import CnnkitError

EPILOG = """examples:
  cnnkit plot runs/mnist_dense runs/mnist_conv --out runs/model1_vs_model2.png
  cnnkit plot runs/a runs/b --metric val_loss --out loss.png
  cnnkit plot runs/tpe_search --out by_key.png   # a search: the metric against each key"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import display
    from cnnkit.experiments.plot import is_search, plot_search
    from cnnkit.training.curves import plot_runs, read_metrics
    from cnnkit.training.names import distinct_tails, key_columns, run_name
    from cnnkit.training.rundirs import (
        SEED,
        differing_keys,
        find_runs,
        is_run_dir,
        read_run,
        seed_groups,
    )

    if len(args.run_dirs) == 1 and is_search(args.run_dirs[0]):  # the metric by searched key
        drawn = plot_search(args.run_dirs[0], args.out, metric=args.metric)
        print(display(f"wrote {args.out}: {drawn} trials"))
        return 0
    # a folder of runs (a sweep, say) stands for every run under it that has an epoch
    paths = [p for d in args.run_dirs
             for p in ([r for r in find_runs(d) if (r / "metrics.csv").exists()]
                       if Path(d).is_dir() and not is_run_dir(Path(d)) else [d])]
    if not paths:
        raise CnnkitError(f"no runs found under {', '.join(args.run_dirs)}")
    histories = [read_metrics(p) for p in paths]
    missing = [str(p) for p, rows in zip(paths, histories) if args.metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {args.metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(histories[0][0])})")
    records = [read_run(Path(p)) for p in paths]
    labels = distinct_tails([Path(p).resolve().parts for p in paths])
    keys = differing_keys(records)
    by_id = {id(r): (label, h) for r, label, h in zip(records, labels, histories)}
    lines: dict[str, list] = {}
    groups = seed_groups(records, keys) if SEED in keys and not args.no_bands \
        else [[r] for r in records]
    for group in groups:
        if len(group) == 1:
            label, history = by_id[id(group[0])]
            lines[label] = history
            continue
        shown = [(c, group[0].values.get(k)) for c, k in zip(key_columns(keys), keys)
                 if k != SEED]
        label = run_name(shown) if shown else Path(paths[0]).resolve().parent.name
        lines[label] = [by_id[id(r)][1] for r in group]
    plot_runs(lines, args.out, metric=args.metric)
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
