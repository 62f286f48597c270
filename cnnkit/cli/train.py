"""`cnnkit train`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cnnkit.errors import TrainingStopped


def run(args: argparse.Namespace) -> int:
    from cnnkit.training.trainer import train

    try:
        train(args.config, out_dir=args.out, resume=args.resume, quiet=args.quiet,
              overrides=tuple(args.set))
    except TrainingStopped as stopped:
        sets = [arg for item in args.set for arg in ("--set", item)]
        command = ["cnnkit", "train", args.config, "--out", str(Path(stopped.checkpoint).parent),
                   "--resume", *sets]
        print(f"cnnkit: {stopped}\nresume with: {shlex.join(command)}", file=sys.stderr,
              flush=True)
        return 128 + stopped.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("train", parents=[common, overrides], help="train a config")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: the config's out, or runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no epoch lines")
    return p
