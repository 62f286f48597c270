"""`cnnkit runs`."""

from __future__ import annotations

import argparse
import shutil
import sys

from cnnkit.cli import HelpFormatter
from cnnkit.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    from cnnkit.experiments.table import runs_table, to_csv, to_json, to_text

    if args.best_config:
        return _best_config(args)
    if args.width is not None and args.width < 0:
        raise ConfigError(f"--width: expected 0 (never wrap) or more columns, found "
                          f"{args.width}")
    table = runs_table(args.dirs, sort=args.sort)
    # a closed pipe (`cnnkit runs DIR | head`) ends quietly in cnnkit.cli.main, as for every
    # command
    print(to_json(table) if args.json else to_csv(table) if args.csv else
          to_text(table, width=_width(args.width)), end="" if args.csv else "\n", flush=True)
    return 0


def _width(asked: int | None) -> int:
    """--width, else the terminal's columns; 0 (whole rows, one a line) where stdout is not a
    terminal, so that grep, awk and a file get each run on one line."""
    if asked is not None:
        return asked
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 0


def _best_config(args: argparse.Namespace) -> int:
    from cnnkit.experiments.best import best_config

    if len(args.dirs) != 1 or args.sort or args.json or args.csv:
        raise ConfigError("--best-config takes one DIR (a search or a folder of runs) and no "
                          "--sort, --json or --csv")
    print(best_config(args.dirs[0]), end="", flush=True)
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "runs", parents=[common], help="a table of the runs under some folders",
        description="One row per run: the config keys that differ between the runs, status, "
                    "epochs, the best and final value of a metric, training time; runs that "
                    "differ only by train.seed also as mean ± sd.",
        epilog="""examples:
  cnnkit runs runs/sweep_mnist_conv
  cnnkit runs runs/ --sort val_loss
  cnnkit runs runs/a runs/b --csv > runs.csv
  cnnkit runs runs/ --width 80 | less
  cnnkit runs runs/tpe --best-config > best.yaml && cnnkit train best.yaml""",
        formatter_class=HelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or folders of runs")
    p.add_argument("--sort", metavar="METRIC",
                   help="show METRIC (default: the runs' train.monitor), best runs first")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the table as JSON")
    form.add_argument("--csv", action="store_true", help="one CSV row per run")
    p.add_argument("--width", type=int, metavar="N",
                   help="the text table's width: rows wider than N columns are shown in column "
                        "groups, each starting with the run's name (0: never; default: the "
                        "terminal's width, and never where the output is not a terminal; "
                        "--json and --csv never wrap)")
    form.add_argument("--best-config", action="store_true",
                      help="print the best finished run's resolved config as YAML (for "
                           "cnnkit train): the result of a search")
    return p
