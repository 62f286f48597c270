"""`cnnkit resume RUN`: go on with a run from its own directory; no config needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.cli.train import train_command
from cnnkit.errors import CnnkitError


def run(args: argparse.Namespace) -> int:
    from cnnkit.rundir import CONFIG

    run_dir = Path(args.run)
    if run_dir.is_file() or run_dir.suffix == ".pt":  # RUN/last.pt names its run too
        run_dir = run_dir.parent
    config = run_dir / CONFIG
    if not config.is_file():
        raise CnnkitError(f"{run_dir}: not a run directory to resume (no config.yaml); "
                          f"start one with cnnkit train CONFIG --out {run_dir}")
    sets = [arg for item in args.set for arg in ("--set", item)]
    return train_command(config, out=str(run_dir), resume=True, quiet=args.quiet,
                         sets=args.set,
                         command=["cnnkit", "resume", args.run,
                                  *(["--quiet"] if args.quiet else []), *sets],
                         again=lambda out: ["cnnkit", "resume", out, *sets])


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "resume", parents=[common, overrides],
        help="continue a run from its directory (or its last.pt)",
        description="Continue a run from its last.pt with the run's own config.yaml: no config "
                    "needed. A run killed before its first checkpoint starts over from its "
                    "recorded config. --set may change only keys that do not change what is "
                    "learned (train.epochs, train.lr, logging, device, workers); more epochs "
                    "are refused for cosine and one-cycle schedules, whose rate is laid out "
                    "over the run's length.",
        epilog="""examples:
  cnnkit resume runs/mnist_conv
  cnnkit resume runs/mnist_conv/last.pt --set train.epochs=40
  cnnkit resume runs/diverged --set train.lr=0.0005""", formatter_class=HelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run directory, or its last.pt")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, no epoch lines (warnings and errors still print)")
    return p
