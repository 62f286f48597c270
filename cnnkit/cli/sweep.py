"""`cnnkit sweep`."""

from __future__ import annotations

import argparse
import shlex
import sys

from cnnkit.cli import HelpFormatter
from cnnkit.cli.search import add_arguments as add_search_arguments


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli import search
    from cnnkit.errors import TrainingStopped, counted
    from cnnkit.experiments.sweep import plan_sweep, run_sweep
    from cnnkit.training.log import RunLog

    if search.wanted(args):
        return search.run(args)
    plan = plan_sweep(args.config, grids=args.grid, seeds=args.seeds, sets=args.set,
                      yes=args.yes)
    log = RunLog()  # `cnnkit sweep ... | head -1`: a closed stdout ends the lines, not the runs
    try:
        records = run_sweep(plan, args.out, jobs=args.jobs, threads=args.threads, log=log)
    except TrainingStopped as stopped:
        print(f"cnnkit: {stopped}\nresume it with: {_command(args)}", file=sys.stderr,
              flush=True)
        return 128 + stopped.signum
    except KeyboardInterrupt:  # between runs, or --jobs N (each child saved and stopped)
        print(f"cnnkit: sweep interrupted\nresume it with: {_command(args)}", file=sys.stderr,
              flush=True)
        return 130
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    log(f"{counted(len(records), 'run')}: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
        f"the table: cnnkit runs {shlex.quote(args.out)}")
    if counts.get("interrupted"):
        log(f"resume the interrupted runs with: {_command(args)}")
    return 1 if counts.get("failed") or counts.get("interrupted") else 0


def _command(args: argparse.Namespace) -> str:
    """The command that runs this sweep again (and so resumes it)."""
    argv = ["cnnkit", "sweep", args.config, *[a for g in args.grid for a in ("--grid", g)]]
    if args.seeds is not None:
        argv += ["--seeds", *map(str, args.seeds)]
    argv += [a for s in args.set for a in ("--set", s)] + ["--out", args.out]
    if args.jobs != 1:
        argv += ["--jobs", str(args.jobs)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return shlex.join(argv + (["--yes"] if args.yes else []))


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep", parents=[common, overrides],
        help="train a config over a grid of values, or search (random, TPE)",
        description="Train one run per combination of the grids' values (and seeds), each in "
                    "OUT/NAME; run it again to skip finished runs and resume interrupted ones. "
                    "With --search, an Optuna study of --trials runs drawn from --space, each "
                    "in OUT/trial-NNNN: run the same command in several processes or machines "
                    "to share the trials.",
        epilog="""examples:
  cnnkit sweep mnist_conv --grid 'train.lr=[0.001, 0.005, 0.02]' --seeds 0 1 2 --out runs/lr
  cnnkit sweep mnist_conv --grid 'train.batch_size=[100, 1000]' --jobs 2 --out runs/bs
  cnnkit sweep mnist_best --grid 'data.fold=[0, 1, 2, 3, 4]' --set data.folds=5 --out runs/cv
  cnnkit sweep mnist_conv --search tpe --trials 20 --out runs/tpe \\
      --space 'train.lr=loguniform(1.0e-4, 0.05)' --space 'train.batch_size=choice(64, 256)'""",
        formatter_class=HelpFormatter)
    p.add_argument("config", help="a config file, or a shipped config's name (e.g. mnist_conv)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY.PATH=[V1, V2, ...]",
                   help="values of one key, a YAML list (repeatable; the product is swept)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="train.seed values, e.g. --seeds 0 1 2")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="sweep folder: sweep.json and one run each")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in a process of its own (default 1: in this one)")
    p.add_argument("--threads", type=int,
                   help="torch threads per run (default: the cores / --jobs), recorded so a "
                        "resumed run keeps them")
    p.add_argument("--yes", action="store_true", help="allow more than 1,000 runs")
    add_search_arguments(p)
    return p
